package outbox

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/natsjs"
	"github.com/sysops-squad/sysops/sqldb"
)

//go:embed migrations
var migrations embed.FS

// Migrations returns the outbox's schema migrations, with a directory per
// dialect; run them with sqldb.Migrate(ctx, db, "outbox", outbox.Migrations()).
func Migrations() fs.FS {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err)
	}
	return sub
}

// MigrationSet is the name under which the outbox's migrations are recorded.
const MigrationSet = "outbox"

// Status is the state of an outbox row.
type Status string

// The states of an outbox row.
const (
	StatusPending Status = "pending" // waiting to be published
	StatusSent    Status = "sent"    // acknowledged by the broker; deleted after the retention
	StatusDead    Status = "dead"    // gave up after the maximum attempts; see last_error
)

// Errors returned by [Write].
var (
	// ErrNoAggregate: every event in the outbox belongs to an aggregate,
	// the unit of ordering.
	ErrNoAggregate = errors.New("outbox: event needs AggregateType and AggregateID")
	// ErrSequenceSet: the outbox numbers each aggregate's events itself.
	ErrSequenceSet = errors.New("outbox: event Sequence is assigned by the outbox and must be zero")
)

// NewID returns a new event id: a UUIDv7, unique and ordered by time.
func NewID() string {
	return uuid.Must(uuid.NewV7()).String()
}

func micros(t time.Time) int64 { return t.UnixMicro() }

const (
	nextSeqSQL = `INSERT INTO outbox_aggregate (aggregate_type, aggregate_id, last_seq) VALUES ($1, $2, 1)
		ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET last_seq = outbox_aggregate.last_seq + 1
		RETURNING last_seq`
	insertSQL = `INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_seq, event_type, subject,
		payload, headers, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)`
	// On PostgreSQL numbering and inserting are one statement: one round trip.
	insertNumberedSQL = `WITH s AS (` + nextSeqSQLParams + `)
		INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_seq, event_type, subject,
			payload, headers, created_at, next_attempt_at)
		SELECT $1, $2, $3, s.last_seq, $4, $5, $6, $7, $8, $8 FROM s`
	nextSeqSQLParams = `INSERT INTO outbox_aggregate (aggregate_type, aggregate_id, last_seq) VALUES ($2, $3, 1)
		ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET last_seq = outbox_aggregate.last_seq + 1
		RETURNING last_seq`
)

// mergeKey merges a transaction's outbox inserts into one statement.
type mergeKey struct{}

// insertNumbered builds the statement that numbers and inserts the events
// a transaction wrote (each the arguments of insertNumberedSQL), in the
// order written: insertNumberedSQL for one event; for more, one statement
// that advances each aggregate's counter by its number of events, in
// aggregate order, and numbers them from it.
func insertNumbered(items []any) sqldb.Stmt {
	if len(items) == 1 {
		return sqldb.Stmt{Query: insertNumberedSQL, Args: items[0].([]any)}
	}
	if len(items) > maxValuesRows {
		return insertNumberedBulk(items)
	}
	var b strings.Builder
	args := make([]any, 0, 9*len(items))
	b.WriteString(`WITH ev (ord, event_id, aggregate_type, aggregate_id, event_type, subject, payload, headers, created_at) AS (VALUES `)
	for i, it := range items {
		row := it.([]any)
		n := len(args)
		if i == 0 {
			fmt.Fprintf(&b, "($%d::int, $%d::text, $%d::text, $%d::text, $%d::text, $%d::text, $%d::bytea, $%d::text, $%d::bigint)",
				n+1, n+2, n+3, n+4, n+5, n+6, n+7, n+8, n+9)
		} else {
			fmt.Fprintf(&b, ", ($%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d)", n+1, n+2, n+3, n+4, n+5, n+6, n+7, n+8, n+9)
		}
		args = append(append(args, i), row...)
	}
	b.WriteString(`)` + numberAndInsert)
	return sqldb.Stmt{Query: b.String(), Args: args}
}

// maxValuesRows is the most events numbered by a statement that lists
// them one row of parameters each: PostgreSQL takes at most 65,535
// parameters a statement (7,281 events of 9), and every count is a
// statement of its own to prepare. A transaction that writes more sends
// them as nine arrays (insertNumberedBulk).
const maxValuesRows = 512

// insertNumberedBulk is insertNumbered with the events as one array per
// column: nine parameters however many events.
func insertNumberedBulk(items []any) sqldb.Stmt {
	ord := make([]int32, len(items))
	var ids, aggTypes, aggIDs, types, subjects, headers []string
	payloads := make([][]byte, len(items))
	created := make([]int64, len(items))
	for i, it := range items {
		row := it.([]any)
		ord[i] = int32(i)
		ids = append(ids, row[0].(string))
		aggTypes = append(aggTypes, row[1].(string))
		aggIDs = append(aggIDs, row[2].(string))
		types = append(types, row[3].(string))
		subjects = append(subjects, row[4].(string))
		payloads[i] = row[5].([]byte)
		headers = append(headers, row[6].(string))
		created[i] = row[7].(int64)
	}
	return sqldb.Stmt{Query: `WITH ev AS (SELECT * FROM unnest($1::int[], $2::text[], $3::text[], $4::text[], $5::text[],
			$6::text[], $7::bytea[], $8::text[], $9::bigint[])
			AS ev (ord, event_id, aggregate_type, aggregate_id, event_type, subject, payload, headers, created_at))` + numberAndInsert,
		Args: []any{ord, ids, aggTypes, aggIDs, types, subjects, payloads, headers, created}}
}

// numberAndInsert follows a CTE ev of the events to write, numbered ord
// in the order written: it advances each aggregate's counter by its
// number of events, in aggregate order, and inserts the events numbered
// from it.
const numberAndInsert = `,
		n AS (SELECT ev.*, row_number() OVER (PARTITION BY aggregate_type, aggregate_id ORDER BY ord) AS k,
			count(*) OVER (PARTITION BY aggregate_type, aggregate_id) AS c FROM ev),
		s AS (INSERT INTO outbox_aggregate (aggregate_type, aggregate_id, last_seq)
			SELECT aggregate_type, aggregate_id, count(*) FROM ev GROUP BY aggregate_type, aggregate_id ORDER BY aggregate_type, aggregate_id
			ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET last_seq = outbox_aggregate.last_seq + excluded.last_seq
			RETURNING aggregate_type, aggregate_id, last_seq)
		INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_seq, event_type, subject,
			payload, headers, created_at, next_attempt_at)
		SELECT n.event_id, n.aggregate_type, n.aggregate_id, s.last_seq - n.c + n.k, n.event_type, n.subject,
			n.payload, n.headers, n.created_at, n.created_at
		FROM n JOIN s ON s.aggregate_type = n.aggregate_type AND s.aggregate_id = n.aggregate_id ORDER BY n.ord`

// Write adds events to the outbox inside the caller's transaction, so that
// they are published if and only if the transaction commits. Each event
// gets the next sequence number of its aggregate (concurrent writers of one
// aggregate are ordered by a row lock, so sequence order is commit order);
// an empty ID gets [NewID] and a zero Time the current time.
//
// When tx is run by [sqldb.RunInTx] (or a [sqldb.Scope]), the commit wakes
// the relays at once; otherwise they find the events at their next poll.
// On PostgreSQL such a transaction sends the events' inserts with its
// COMMIT ([sqldb.ExecAtCommit]), in one round trip: a database error from
// them (a duplicate event id, say) is then returned by the commit, and
// nothing commits.
func Write(ctx context.Context, tx *sql.Tx, events ...sysops.Event) error {
	now := time.Now().UTC()
	for _, ev := range events {
		if ev.AggregateType == "" || ev.AggregateID == "" {
			return fmt.Errorf("%w (event %s)", ErrNoAggregate, ev.Type)
		}
		if ev.Sequence != 0 {
			return fmt.Errorf("%w (event %s)", ErrSequenceSet, ev.Type)
		}
		if ev.ID == "" {
			ev.ID = NewID()
		}
		if ev.Time.IsZero() {
			ev.Time = now
		}
		// The stored headers leave out the sequence; the relay adds it
		// from aggregate_seq when it publishes.
		msg, err := natsjs.EventMessage(ev)
		if err != nil {
			return fmt.Errorf("outbox: %w", err)
		}
		headers, err := json.Marshal(msg.Header)
		if err != nil {
			return fmt.Errorf("outbox: %w", err)
		}
		if d, _ := sqldb.TxDialect(tx); d == sqldb.Postgres {
			args := []any{ev.ID, ev.AggregateType, ev.AggregateID, ev.Type, msg.Subject, msg.Data, string(headers), micros(now)}
			if sqldb.ExecAtCommitMerged(tx, mergeKey{}, args, insertNumbered) {
				continue
			}
			if _, err := tx.ExecContext(ctx, insertNumberedSQL, args...); err != nil {
				return fmt.Errorf("outbox: insert event %s: %w", ev.ID, err)
			}
			continue
		}
		var seq int64
		if err := tx.QueryRowContext(ctx, nextSeqSQL, ev.AggregateType, ev.AggregateID).Scan(&seq); err != nil {
			return fmt.Errorf("outbox: number event %s: %w", ev.ID, err)
		}
		if _, err := tx.ExecContext(ctx, insertSQL, ev.ID, ev.AggregateType, ev.AggregateID, seq, ev.Type,
			msg.Subject, msg.Data, string(headers), micros(now)); err != nil {
			return fmt.Errorf("outbox: insert event %s: %w", ev.ID, err)
		}
	}
	sqldb.AfterCommit(tx, wake)
	return nil
}

// Wake-ups. Relays in this process register under their database's URL;
// a commit through Write wakes those of its database and, on PostgreSQL,
// sends a NOTIFY for relays in other processes.

const notifyChannel = "sysops_outbox"

var wakeups struct {
	sync.Mutex
	relays    map[string]map[*Relay]struct{}
	notifiers map[string]*pgNotifier
}

func register(r *Relay) {
	wakeups.Lock()
	defer wakeups.Unlock()
	if wakeups.relays == nil {
		wakeups.relays = map[string]map[*Relay]struct{}{}
	}
	key := r.db.URL()
	if wakeups.relays[key] == nil {
		wakeups.relays[key] = map[*Relay]struct{}{}
	}
	wakeups.relays[key][r] = struct{}{}
}

func unregister(r *Relay) {
	wakeups.Lock()
	defer wakeups.Unlock()
	delete(wakeups.relays[r.db.URL()], r)
}

func wake(db *sqldb.DB) {
	key := db.URL()
	wakeups.Lock()
	localLeader := false
	for r := range wakeups.relays[key] {
		r.poke()
		localLeader = localLeader || r.isLeader()
	}
	// NOTIFY is for a leader in another process; when this process leads,
	// the poke above is enough.
	var n *pgNotifier
	if db.Dialect() == sqldb.Postgres && !localLeader {
		if wakeups.notifiers == nil {
			wakeups.notifiers = map[string]*pgNotifier{}
		}
		if n = wakeups.notifiers[key]; n == nil {
			n = &pgNotifier{}
			wakeups.notifiers[key] = n
		}
	}
	wakeups.Unlock()
	if n != nil {
		n.poke(db)
	}
}

// deadChanged tells the relays of this process that dead rows were retried
// or purged, and wakes them. Relays elsewhere see it within deadRefresh.
func deadChanged(db *sqldb.DB) {
	wakeups.Lock()
	for r := range wakeups.relays[db.URL()] {
		r.forgetDead()
	}
	wakeups.Unlock()
	wake(db)
}

// pgNotifier sends NOTIFY for a database, coalescing the commits that
// happen while one is in flight into one more.
type pgNotifier struct {
	running atomic.Bool
	again   atomic.Bool
}

func (n *pgNotifier) poke(db *sqldb.DB) {
	n.again.Store(true)
	if !n.running.CompareAndSwap(false, true) {
		return
	}
	go func() {
		for {
			for n.again.Swap(false) {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, _ = db.ExecContext(ctx, `SELECT pg_notify($1, '')`, notifyChannel)
				cancel()
			}
			n.running.Store(false)
			// A poke between the last Swap and the Store saw running and
			// left; take it up.
			if !n.again.Load() || !n.running.CompareAndSwap(false, true) {
				return
			}
		}
	}()
}
