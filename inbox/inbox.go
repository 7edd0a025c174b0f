package inbox

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/natsjs"
	"github.com/sysops-squad/sysops/sqldb"
)

//go:embed migrations/*.sql
var migrations embed.FS

// MigrationSet is the name under which the inbox's migrations are recorded.
const MigrationSet = "inbox"

// Migrations returns the inbox's schema migrations; run them with
// sqldb.Migrate(ctx, db, inbox.MigrationSet, inbox.Migrations()).
func Migrations() fs.FS {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err)
	}
	return sub
}

// Outcome says what [Process] did with an event.
type Outcome int

// The outcomes of [Process].
const (
	Applied   Outcome = iota + 1 // the handler ran and its effect committed
	Duplicate                    // already applied before: nothing ran
	Parked                       // ahead of its predecessor: kept for later
)

func (o Outcome) String() string {
	switch o {
	case Applied:
		return "applied"
	case Duplicate:
		return "duplicate"
	case Parked:
		return "parked"
	}
	return "unknown"
}

// Permanent marks a handler error that no retry can fix: the message goes
// to the dead-letter stream at once with the error as the reason.
func Permanent(err error) error { return natsjs.Permanent(err) }

// ApplyFunc applies one event's effect inside tx. It must touch nothing
// but tx: it may run again if the transaction is retried.
type ApplyFunc func(ctx context.Context, tx *sql.Tx, ev sysops.Event) error

// Process applies ev for consumer exactly once: in one transaction it
// checks whether ev was applied before, runs fn, and records it. An event
// with an aggregate sequence that arrives ahead of its predecessor is
// parked and applied after it when it arrives — by the fn of the call that
// releases it, so with Process fn must handle every type of event the
// consumer parks. ([Consumer] applies each released event with the handler
// of its own type.)
func Process(ctx context.Context, db *sqldb.DB, consumer string, ev sysops.Event, fn ApplyFunc) (Outcome, error) {
	return process(ctx, db, consumer, ev, func(sysops.Event) (ApplyFunc, error) { return guarded(fn), nil })
}

// guarded runs fn, turning a panic into a permanent error: a handler's
// bug on one event dead-letters that event (its transaction rolled back)
// instead of crashing the consumer or failing the events applied with it.
func guarded(fn ApplyFunc) ApplyFunc {
	return func(ctx context.Context, tx *sql.Tx, ev sysops.Event) (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = Permanent(fmt.Errorf("handler panicked on %s %s: %v", ev.Type, ev.ID, p))
			}
		}()
		return fn(ctx, tx, ev)
	}
}

// handlerFor returns the function that applies an event.
type handlerFor func(ev sysops.Event) (ApplyFunc, error)

func process(ctx context.Context, db *sqldb.DB, consumer string, ev sysops.Event, handler handlerFor) (Outcome, error) {
	var out Outcome
	err := sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
		var err error
		out, err = apply(ctx, tx, consumer, ev, handler)
		return err
	})
	if err != nil {
		return 0, settled(err)
	}
	return out, nil
}

// settled marks a database's refusal of a value (see
// [sqldb.IsDataError]) permanent: delivering the event again would fail
// the same way, and hold back the events after it.
func settled(err error) error {
	if sqldb.IsDataError(err) && !natsjs.IsPermanent(err) {
		return Permanent(fmt.Errorf("the database refused the event's data: %w", err))
	}
	return err
}

func now() int64 { return time.Now().UnixMicro() }

// apply is Process inside the caller's transaction; handler gives the
// function for ev and for each parked event it releases.
func apply(ctx context.Context, tx *sql.Tx, consumer string, ev sysops.Event, handler handlerFor) (Outcome, error) {
	if ev.ID == "" {
		return 0, errors.New("inbox: event has no id")
	}
	fn, err := handler(ev)
	if err != nil {
		return 0, err
	}
	if !sequenced(ev) {
		res, err := tx.ExecContext(ctx, `INSERT INTO inbox (consumer, message_id, processed_at) VALUES ($1, $2, $3)
			ON CONFLICT (consumer, message_id) DO NOTHING`, consumer, ev.ID, now())
		if err != nil {
			return 0, fmt.Errorf("inbox: record %s: %w", ev.ID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return Duplicate, nil
		}
		if err := fn(ctx, tx, ev); err != nil {
			return 0, err
		}
		return Applied, nil
	}

	// The common case first, in one statement: the event is the next of
	// its aggregate. Taking the row's lock orders concurrent instances; a
	// failing fn rolls the update back with everything else.
	if ev.Sequence == 1 {
		res, err := tx.ExecContext(ctx, `INSERT INTO inbox_aggregate (consumer, aggregate_type, aggregate_id, last_seq)
			VALUES ($1, $2, $3, 1) ON CONFLICT (consumer, aggregate_type, aggregate_id) DO NOTHING`,
			consumer, ev.AggregateType, ev.AggregateID)
		if err != nil {
			return 0, fmt.Errorf("inbox: record %s: %w", ev.ID, err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			if err := fn(ctx, tx, ev); err != nil {
				return 0, err
			}
			return Applied, nil
		}
	} else {
		var parked int64
		err := tx.QueryRowContext(ctx, `UPDATE inbox_aggregate SET last_seq = $4
			WHERE consumer = $1 AND aggregate_type = $2 AND aggregate_id = $3 AND last_seq = $4 - 1
			RETURNING parked`, consumer, ev.AggregateType, ev.AggregateID, ev.Sequence).Scan(&parked)
		if err == nil {
			if err := fn(ctx, tx, ev); err != nil {
				return 0, err
			}
			return Applied, unpark(ctx, tx, consumer, ev, parked, handler)
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return 0, fmt.Errorf("inbox: record %s: %w", ev.ID, err)
		}
	}

	// Otherwise a duplicate, a gap, or the first event seen of an
	// aggregate not starting at 1: lock the row (creating it at 0) and look.
	var last, parked int64
	if err := tx.QueryRowContext(ctx, `INSERT INTO inbox_aggregate (consumer, aggregate_type, aggregate_id, last_seq)
		VALUES ($1, $2, $3, 0)
		ON CONFLICT (consumer, aggregate_type, aggregate_id) DO UPDATE SET last_seq = inbox_aggregate.last_seq
		RETURNING last_seq, parked`, consumer, ev.AggregateType, ev.AggregateID).Scan(&last, &parked); err != nil {
		return 0, fmt.Errorf("inbox: lock aggregate %s %s: %w", ev.AggregateType, ev.AggregateID, err)
	}
	switch {
	case ev.Sequence <= last:
		return Duplicate, nil
	case ev.Sequence > last+1:
		b, err := ev.MarshalJSON()
		if err != nil {
			return 0, fmt.Errorf("inbox: park %s: %w", ev.ID, err)
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO inbox_parked (consumer, aggregate_type, aggregate_id, sequence, event, parked_at)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
			consumer, ev.AggregateType, ev.AggregateID, ev.Sequence, string(b), now())
		if err != nil {
			return 0, fmt.Errorf("inbox: park %s: %w", ev.ID, err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			if _, err := tx.ExecContext(ctx, `UPDATE inbox_aggregate SET parked = parked + 1
				WHERE consumer = $1 AND aggregate_type = $2 AND aggregate_id = $3`,
				consumer, ev.AggregateType, ev.AggregateID); err != nil {
				return 0, fmt.Errorf("inbox: park %s: %w", ev.ID, err)
			}
		}
		return Parked, nil
	}
	if err := fn(ctx, tx, ev); err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE inbox_aggregate SET last_seq = $1
		WHERE consumer = $2 AND aggregate_type = $3 AND aggregate_id = $4`,
		ev.Sequence, consumer, ev.AggregateType, ev.AggregateID); err != nil {
		return 0, fmt.Errorf("inbox: record %s: %w", ev.ID, err)
	}
	return Applied, unpark(ctx, tx, consumer, ev, parked, handler)
}

type aggregate struct{ typ, id string }

// sequenced reports whether ev is de-duplicated by its aggregate sequence
// (rather than by its id).
func sequenced(ev sysops.Event) bool { return ev.AggregateID != "" && ev.Sequence > 0 }

func aggregateOf(ev sysops.Event) aggregate { return aggregate{ev.AggregateType, ev.AggregateID} }

// minClaim is the smallest batch claimRuns records in one statement. The
// statement is planned at each call (see sqldb.PlanPerCall), which on a
// busy 2-core machine costs as much as 5-40 round trips: it pays off for
// the large batches of a consumer catching up, not for the small ones of
// a consumer keeping up, whose latency it would raise.
const minClaim = 32

// claimRunsSQL advances, in one statement, every aggregate whose run of
// events (first..last) follows its last applied sequence with nothing
// parked, and starts those whose run begins at 1; it returns the
// aggregates it advanced or started. The row locks it takes order
// concurrent instances as apply's do.
//
// Each aggregate's row is found by its key, one lookup per aggregate of
// the batch (a LATERAL subquery on the whole primary key), and updated by
// its row id: a plain join of the batch to the table can be planned, on a
// table without statistics (new, or grown since autovacuum last analyzed
// it), as a pass over the whole table per aggregate — 648 ms for a batch
// of 64 over 50,000 aggregates in psql, 1.6 ms this way.
const claimRunsSQL = `WITH v AS (
		SELECT * FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[]) AS v(agg_type, agg_id, first_seq, last_seq)
	), due AS MATERIALIZED (
		SELECT a.tid, v.last_seq FROM v CROSS JOIN LATERAL (
			SELECT ctid AS tid FROM inbox_aggregate
			WHERE consumer = $1 AND aggregate_type = v.agg_type AND aggregate_id = v.agg_id
				AND last_seq = v.first_seq - 1 AND parked = 0
			FOR UPDATE) a
	), advanced AS (
		UPDATE inbox_aggregate a SET last_seq = due.last_seq FROM due WHERE a.ctid = due.tid
		RETURNING a.aggregate_type, a.aggregate_id
	), started AS (
		INSERT INTO inbox_aggregate (consumer, aggregate_type, aggregate_id, last_seq)
		SELECT $1, agg_type, agg_id, last_seq FROM v WHERE first_seq = 1
		ON CONFLICT (consumer, aggregate_type, aggregate_id) DO NOTHING
		RETURNING aggregate_type, aggregate_id
	)
	SELECT aggregate_type, aggregate_id FROM advanced UNION ALL SELECT aggregate_type, aggregate_id FROM started`

// claimRuns records, on PostgreSQL, the common case of a whole batch in
// one round trip instead of one per event: for each aggregate whose events
// in evs (in delivery order) are consecutive sequences, it advances the
// aggregate's position past all of them if the first is the next one due.
// The caller then runs the handlers of the claimed aggregates' events
// without further bookkeeping, and apply for everything else (duplicates,
// gaps, parked predecessors, events without a sequence), in the same
// transaction. On SQLite, whose statements cost no round trip, it claims
// nothing.
func claimRuns(ctx context.Context, tx *sql.Tx, consumer string, evs []sysops.Event) (map[aggregate]bool, error) {
	if d, _ := sqldb.TxDialect(tx); d != sqldb.Postgres || len(evs) < minClaim {
		return nil, nil
	}
	type run struct {
		first, last int64
		broken      bool
	}
	runs := map[aggregate]*run{}
	var order []aggregate
	for _, ev := range evs {
		if !sequenced(ev) {
			continue
		}
		k := aggregateOf(ev)
		r, ok := runs[k]
		switch {
		case !ok:
			runs[k] = &run{first: ev.Sequence, last: ev.Sequence}
			order = append(order, k)
		case ev.Sequence == r.last+1:
			r.last = ev.Sequence
		default:
			r.broken = true
		}
	}
	var types, ids []string
	var firsts, lasts []int64
	for _, k := range order {
		if r := runs[k]; !r.broken {
			types, ids = append(types, k.typ), append(ids, k.id)
			firsts, lasts = append(firsts, r.first), append(lasts, r.last)
		}
	}
	if len(types) == 0 {
		return nil, nil
	}
	rows, err := tx.QueryContext(ctx, claimRunsSQL, sqldb.PlanPerCall, consumer, types, ids, firsts, lasts)
	if err != nil {
		return nil, fmt.Errorf("inbox: record batch: %w", err)
	}
	defer rows.Close()
	claimed := make(map[aggregate]bool, len(types))
	for rows.Next() {
		var k aggregate
		if err := rows.Scan(&k.typ, &k.id); err != nil {
			return nil, fmt.Errorf("inbox: record batch: %w", err)
		}
		claimed[k] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("inbox: record batch: %w", err)
	}
	return claimed, nil
}

// unpark applies, after ev, the parked events that follow it without a
// gap (at most parked of them), each with its own handler, and records the
// new position.
func unpark(ctx context.Context, tx *sql.Tx, consumer string, ev sysops.Event, parked int64, handler handlerFor) error {
	cur, unparked := ev.Sequence, int64(0)
	for parked > unparked {
		var raw string
		err := tx.QueryRowContext(ctx, `SELECT event FROM inbox_parked
			WHERE consumer = $1 AND aggregate_type = $2 AND aggregate_id = $3 AND sequence = $4`,
			consumer, ev.AggregateType, ev.AggregateID, cur+1).Scan(&raw)
		if errors.Is(err, sql.ErrNoRows) {
			break
		}
		if err != nil {
			return fmt.Errorf("inbox: unpark: %w", err)
		}
		next, err := sysops.ParseEvent([]byte(raw))
		if err != nil {
			return fmt.Errorf("inbox: parked event %s #%d: %w", ev.AggregateID, cur+1, err)
		}
		fn, err := handler(next)
		if err != nil {
			return fmt.Errorf("inbox: parked event %s #%d: %w", ev.AggregateID, cur+1, err)
		}
		if err := fn(ctx, tx, next); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM inbox_parked
			WHERE consumer = $1 AND aggregate_type = $2 AND aggregate_id = $3 AND sequence = $4`,
			consumer, ev.AggregateType, ev.AggregateID, cur+1); err != nil {
			return fmt.Errorf("inbox: unpark: %w", err)
		}
		cur++
		unparked++
	}
	if unparked == 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `UPDATE inbox_aggregate SET last_seq = $1, parked = parked - $2
		WHERE consumer = $3 AND aggregate_type = $4 AND aggregate_id = $5`,
		cur, unparked, consumer, ev.AggregateType, ev.AggregateID); err != nil {
		return fmt.Errorf("inbox: unpark: %w", err)
	}
	return nil
}

// Gap is a run of an aggregate's sequence numbers that a consumer gave up
// waiting for: the events From..To are lost to it (should one arrive
// later, it is a duplicate), and the Applied parked events that followed
// them have taken effect.
type Gap struct {
	Consumer      string `json:"consumer"`
	AggregateType string `json:"aggregate_type"`
	AggregateID   string `json:"aggregate_id"`
	From          int64  `json:"from"`
	To            int64  `json:"to"`
	Applied       int64  `json:"applied"`
}

// ErrNothingParked: the aggregate has no parked event, so no gap to skip.
var ErrNothingParked = errors.New("inbox: nothing is parked for the aggregate")

// skipGap moves an aggregate's position to just before its first parked
// event and applies the parked events from there that follow without a
// gap, each with its own handler, in tx.
func skipGap(ctx context.Context, tx *sql.Tx, consumer, aggType, aggID string, handler handlerFor) (Gap, error) {
	g := Gap{Consumer: consumer, AggregateType: aggType, AggregateID: aggID}
	var last, parked int64
	if err := tx.QueryRowContext(ctx, `INSERT INTO inbox_aggregate (consumer, aggregate_type, aggregate_id, last_seq)
		VALUES ($1, $2, $3, 0)
		ON CONFLICT (consumer, aggregate_type, aggregate_id) DO UPDATE SET last_seq = inbox_aggregate.last_seq
		RETURNING last_seq, parked`, consumer, aggType, aggID).Scan(&last, &parked); err != nil {
		return g, fmt.Errorf("inbox: lock aggregate %s %s: %w", aggType, aggID, err)
	}
	var first int64
	var raw string
	err := tx.QueryRowContext(ctx, `SELECT sequence, event FROM inbox_parked
		WHERE consumer = $1 AND aggregate_type = $2 AND aggregate_id = $3 AND sequence > $4 ORDER BY sequence LIMIT 1`,
		consumer, aggType, aggID, last).Scan(&first, &raw)
	if errors.Is(err, sql.ErrNoRows) {
		return g, fmt.Errorf("%w (%s %s %s)", ErrNothingParked, consumer, aggType, aggID)
	}
	if err != nil {
		return g, fmt.Errorf("inbox: skip gap: %w", err)
	}
	ev, err := sysops.ParseEvent([]byte(raw))
	if err != nil {
		return g, fmt.Errorf("inbox: parked event %s #%d: %w", aggID, first, err)
	}
	fn, err := handler(ev)
	if err != nil {
		return g, fmt.Errorf("inbox: parked event %s #%d: %w", aggID, first, err)
	}
	if err := fn(ctx, tx, ev); err != nil {
		return g, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM inbox_parked
		WHERE consumer = $1 AND aggregate_type = $2 AND aggregate_id = $3 AND sequence = $4`,
		consumer, aggType, aggID, first); err != nil {
		return g, fmt.Errorf("inbox: skip gap: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE inbox_aggregate SET last_seq = $1, parked = parked - 1
		WHERE consumer = $2 AND aggregate_type = $3 AND aggregate_id = $4`, first, consumer, aggType, aggID); err != nil {
		return g, fmt.Errorf("inbox: skip gap: %w", err)
	}
	if err := unpark(ctx, tx, consumer, ev, parked-1, handler); err != nil {
		return g, err
	}
	var now int64
	if err := tx.QueryRowContext(ctx, `SELECT last_seq FROM inbox_aggregate
		WHERE consumer = $1 AND aggregate_type = $2 AND aggregate_id = $3`, consumer, aggType, aggID).Scan(&now); err != nil {
		return g, fmt.Errorf("inbox: skip gap: %w", err)
	}
	g.From, g.To, g.Applied = last+1, first-1, now-first+1
	return g, nil
}

// staleAggregates lists the aggregates of consumer whose oldest parked
// event was parked before cutoff (microseconds).
func staleAggregates(ctx context.Context, db *sqldb.DB, consumer string, cutoff int64) ([]aggregate, error) {
	q, err := db.QueryContext(ctx, `SELECT aggregate_type, aggregate_id FROM inbox_parked
		WHERE consumer = $1 GROUP BY aggregate_type, aggregate_id HAVING min(parked_at) < $2`, consumer, cutoff)
	if err != nil {
		return nil, fmt.Errorf("inbox: stale gaps: %w", err)
	}
	defer q.Close()
	var out []aggregate
	for q.Next() {
		var a aggregate
		if err := q.Scan(&a.typ, &a.id); err != nil {
			return nil, fmt.Errorf("inbox: stale gaps: %w", err)
		}
		out = append(out, a)
	}
	return out, q.Err()
}

// ParkedEvent is an event waiting for its predecessor.
type ParkedEvent struct {
	Consumer      string    `json:"consumer"`
	AggregateType string    `json:"aggregate_type"`
	AggregateID   string    `json:"aggregate_id"`
	Sequence      int64     `json:"sequence"`
	Waiting       int64     `json:"waiting_for"` // the sequence it waits for
	ParkedAt      time.Time `json:"parked_at"`
}

// ListParked lists the parked events of every consumer in db, oldest first.
func ListParked(ctx context.Context, db *sqldb.DB, limit int) ([]ParkedEvent, error) {
	q, err := db.QueryContext(ctx, `SELECT p.consumer, p.aggregate_type, p.aggregate_id, p.sequence, a.last_seq + 1, p.parked_at
		FROM inbox_parked p JOIN inbox_aggregate a
		ON a.consumer = p.consumer AND a.aggregate_type = p.aggregate_type AND a.aggregate_id = p.aggregate_id
		ORDER BY p.parked_at LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("inbox: parked: %w", err)
	}
	defer q.Close()
	out := []ParkedEvent{}
	for q.Next() {
		var p ParkedEvent
		var at int64
		if err := q.Scan(&p.Consumer, &p.AggregateType, &p.AggregateID, &p.Sequence, &p.Waiting, &at); err != nil {
			return nil, fmt.Errorf("inbox: parked: %w", err)
		}
		p.ParkedAt = time.UnixMicro(at).UTC()
		out = append(out, p)
	}
	return out, q.Err()
}

// Prune deletes the processed-message records of consumer older than
// before, and returns how many. Records of aggregate sequences are kept:
// one row per aggregate.
func Prune(ctx context.Context, db *sqldb.DB, consumer string, before time.Time) (int64, error) {
	res, err := db.ExecContext(ctx, `DELETE FROM inbox WHERE consumer = $1 AND processed_at < $2`, consumer, before.UnixMicro())
	if err != nil {
		return 0, fmt.Errorf("inbox: prune: %w", err)
	}
	return res.RowsAffected()
}
