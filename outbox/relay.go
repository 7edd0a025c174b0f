package outbox

import (
	"cmp"
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/natsjs"
	"github.com/sysops-squad/sysops/sqldb"
)

// Publisher stores messages on the broker and reports, per message,
// whether it was acknowledged. *natsjs.Broker is one.
//
// A Publisher that also has a method Ping(ctx) error, as *natsjs.Broker
// does, is asked after a round with failed publishes whether the broker
// can be reached at all. If it cannot, the failures are the outage's, not
// the events': no attempt is counted against the rows, so an outage
// however long makes no row dead, and the relay waits for the broker
// (see [Round.BrokerDown]). Without Ping every failure counts, except
// those of a broker refusing messages for a state of its own, such as
// being out of storage ([natsjs.IsUnavailable]), which count none either.
type Publisher interface {
	PublishBatch(ctx context.Context, msgs []natsjs.Message) ([]natsjs.PubAck, []error)
}

var _ Publisher = (*natsjs.Broker)(nil)

// RelayConfig configures a [Relay]. The zero value of each field means its
// default.
type RelayConfig struct {
	// Name of the relay group: relays with one name on one database
	// take turns, never publishing at the same time. Default "outbox".
	Name string
	// BatchSize is the most rows read and published per round. Default 1000.
	BatchSize int
	// PollInterval is how often the relay looks for work when nothing woke
	// it (commits in other processes on SQLite, rows whose retry is due).
	// Default 500 ms. A started relay runs a round at least every third
	// of LeaseTTL (SQLite) or of LeaseTTL + PublishTimeout (PostgreSQL)
	// whatever this is, to keep its lead while it has nothing to do.
	PollInterval time.Duration
	// MaxAttempts is how many failed publishes make a row dead. Default 10.
	// Publishes that fail while the broker cannot be reached at all do not
	// count (see [Publisher]); one the broker refuses for what the message
	// is ([natsjs.IsRejected]: too large, say) makes the row dead at once.
	MaxAttempts int
	// Backoff gives the delay before attempt n+1 after attempt n failed.
	// Default: 500 ms doubling up to 5 minutes, with ±20% jitter.
	Backoff func(attempt int) time.Duration
	// PublishTimeout bounds waiting for the broker's acks of one round.
	// Default 10 s.
	PublishTimeout time.Duration
	// LeaseTTL is how long an SQLite relay holds the lease without renewing
	// it; a crashed or stalled holder is replaced after this long. Default
	// 5 s. (PostgreSQL relays hold an advisory lock instead, released the
	// moment their session dies, and the server ends a session silent for
	// LeaseTTL + PublishTimeout: a leader that stopped running without
	// dying is replaced after that long.)
	LeaseTTL time.Duration
	// Retention is how long sent rows are kept before they are deleted.
	// Default 0: a row is deleted as soon as the broker has its event (the
	// stream is the record of what was published). A positive value keeps
	// that window of sent rows to inspect (`sysops outbox list --status
	// sent`), at the cost of an update per row before its delete.
	Retention time.Duration
	Logger    *slog.Logger
}

func (c *RelayConfig) setDefaults() {
	c.Name = cmp.Or(c.Name, "outbox")
	c.BatchSize = cmp.Or(c.BatchSize, 1000)
	c.PollInterval = cmp.Or(c.PollInterval, 500*time.Millisecond)
	c.MaxAttempts = cmp.Or(c.MaxAttempts, 10)
	if c.Backoff == nil {
		c.Backoff = DefaultBackoff
	}
	c.PublishTimeout = cmp.Or(c.PublishTimeout, 10*time.Second)
	c.LeaseTTL = cmp.Or(c.LeaseTTL, 5*time.Second)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// DefaultBackoff is the delay before attempt n+1: 500 ms doubling per
// attempt, capped at 5 minutes, with ±20% jitter.
func DefaultBackoff(attempt int) time.Duration {
	d := min(500*time.Millisecond<<min(max(attempt-1, 0), 10), 5*time.Minute)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// Relay moves pending outbox rows to the broker. See the package
// documentation for its guarantees.
type Relay struct {
	db     *sqldb.DB
	pub    Publisher
	cfg    RelayConfig
	holder string

	wakeCh chan struct{}
	cancel context.CancelFunc
	done   chan struct{}

	mu          sync.Mutex      // guards the leadership state below
	lockConn    *sql.Conn       // PostgreSQL: the session holding the advisory lock
	leaseUntil  time.Time       // SQLite: when our lease runs out
	lockChecked time.Time       // when the lock session last answered
	dead        map[string]bool // aggregates with a dead row, as last read
	deadAt      time.Time
}

// NewRelay returns a relay for the outbox in db. Start it with
// [Relay.Start], or drive it with [Relay.RunOnce]; call [Relay.Stop] when
// done with it either way.
func NewRelay(db *sqldb.DB, pub Publisher, cfg RelayConfig) (*Relay, error) {
	if db == nil || pub == nil {
		return nil, errors.New("outbox: NewRelay needs a database and a publisher")
	}
	cfg.setDefaults()
	if cfg.BatchSize < 1 || cfg.MaxAttempts < 1 {
		return nil, fmt.Errorf("outbox: BatchSize %d and MaxAttempts %d must be positive", cfg.BatchSize, cfg.MaxAttempts)
	}
	r := &Relay{
		db:     db,
		pub:    pub,
		cfg:    cfg,
		holder: NewID(),
		wakeCh: make(chan struct{}, 1),
	}
	register(r) // until Stop
	return r, nil
}

func (r *Relay) poke() {
	select {
	case r.wakeCh <- struct{}{}:
	default:
	}
}

// Start runs the relay in the background until ctx ends or Stop is
// called. It wakes on commits (see [Write]), on PostgreSQL notifications,
// and every PollInterval.
func (r *Relay) Start(ctx context.Context) error {
	ctx, r.cancel = context.WithCancel(ctx)
	r.done = make(chan struct{})
	var notified <-chan struct{}
	if r.db.Dialect() == sqldb.Postgres {
		ch, err := sqldb.Listen(ctx, r.db, notifyChannel)
		if err != nil {
			r.cfg.Logger.WarnContext(ctx, "outbox: LISTEN failed; relying on polling", "error", err)
		}
		notified = ch
	}
	go r.loop(ctx, notified)
	return nil
}

// Stop stops the relay if it was started, waits for the round in
// progress, and gives up its lease or lock so that another relay takes
// over at once.
func (r *Relay) Stop() {
	if r.cancel != nil {
		r.cancel()
		<-r.done
	}
	unregister(r)
	r.release()
}

func (r *Relay) loop(ctx context.Context, notified <-chan struct{}) {
	defer close(r.done)
	poll := time.NewTicker(r.idlePoll())
	defer poll.Stop()
	lastClean := time.Time{}
	outages := 0  // rounds in a row that found the broker unreachable
	failures := 0 // rounds in a row that failed
	for {
		down, failed := false, false
		for ctx.Err() == nil {
			res, err := r.RunOnce(ctx)
			if err != nil {
				if ctx.Err() == nil {
					r.cfg.Logger.WarnContext(ctx, "outbox: relay round failed", "error", err, "failures", failures+1)
				}
				failed = true
				break
			}
			if down = res.BrokerDown; down {
				break
			}
			if res.Read < r.cfg.BatchSize || res.Published == 0 {
				break // drained, or nothing publishable now
			}
		}
		if down {
			// Commits would wake the relay into round after round that
			// cannot publish: wait for the broker instead.
			outages++
			select {
			case <-ctx.Done():
				return
			case <-time.After(r.outageWait(outages)):
			}
			continue
		}
		outages = 0
		if time.Since(lastClean) > r.cleanEvery() && r.isLeader() {
			if _, err := r.DeleteSent(ctx); err != nil && ctx.Err() == nil {
				r.cfg.Logger.WarnContext(ctx, "outbox: delete sent rows", "error", err)
			}
			lastClean = time.Now()
		}
		if failed {
			failures++
		} else {
			failures = 0
		}
		wait := poll.C
		if failures > 0 {
			// Not the next poll but a growing pause; a commit still
			// cuts it short (the database takes writes again).
			wait = time.After(r.failureWait(failures))
		}
		select {
		case <-ctx.Done():
			return
		case <-r.wakeCh:
		case <-notified:
		case <-wait:
		}
	}
}

// Round says what one [Relay.RunOnce] did.
type Round struct {
	Leader    bool // false: another relay holds the lease or lock
	Read      int  // pending rows read
	Published int  // rows acknowledged by the broker and marked sent
	Failed    int  // rows whose publish failed (retried later, or now dead)
	Dead      int  // rows that became dead in this round
	// Interrupted counts rows whose publish was cut short because the
	// caller's ctx ended (a relay being stopped), the broker could not be
	// reached, or their stream was gone and has been made again
	// ([natsjs.ErrStreamMadeAgain]): they stay pending as they were, with no attempt counted
	// and no backoff, and a later round publishes them again (the broker
	// drops the copies it already has by event id).
	Interrupted int
	// BrokerDown: publishes failed and the broker did not answer a ping
	// (see [Publisher]), or refused them for a state of its own, such as
	// being out of storage ([natsjs.IsUnavailable]). A started relay then
	// waits PollInterval, doubling per such round up to 5 s, before it
	// tries again.
	BrokerDown bool
}

type row struct {
	seq           int64
	eventID       string
	aggregateType string
	aggregateID   string
	aggregateSeq  int64
	subject       string
	payload       []byte
	headers       string
	attempts      int
	nextAttemptAt int64
}

// RunOnce performs one round: if this relay leads its group, it reads up
// to BatchSize pending rows, publishes those that are due, and records the
// outcome. Rows of one aggregate are published strictly in sequence order:
// an event waits while an earlier one of its aggregate is pending (not yet
// due) or dead, and within a round a later event is sent only after the
// broker acknowledged the earlier one.
func (r *Relay) RunOnce(ctx context.Context) (Round, error) {
	leader, err := r.lead(ctx)
	if err != nil || !leader {
		return Round{}, err
	}
	round := Round{Leader: true}
	rows, err := r.pending(ctx)
	if err != nil {
		return round, err
	}
	round.Read = len(rows)
	if len(rows) == 0 {
		return round, nil
	}
	blocked, err := r.deadAggregates(ctx)
	if err != nil {
		return round, err
	}
	blocked = maps.Clone(blocked)

	// Group the due rows by aggregate, in sequence order; wave i holds the
	// i-th row of every aggregate.
	now := micros(time.Now())
	var order []string
	perAgg := map[string][]*row{}
	for _, rw := range rows {
		key := rw.aggregateType + "\x00" + rw.aggregateID
		if blocked[key] {
			continue
		}
		if rw.nextAttemptAt > now {
			blocked[key] = true
			continue
		}
		if _, ok := perAgg[key]; !ok {
			order = append(order, key)
		}
		perAgg[key] = append(perAgg[key], rw)
	}

	caller := ctx
	ctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	defer cancel()
	var sent []int64
	var failed []failure
	for wave := 0; ; wave++ {
		var batch []*row
		for _, key := range order {
			if rs := perAgg[key]; wave < len(rs) && !blocked[key] {
				batch = append(batch, rs[wave])
			}
		}
		if len(batch) == 0 {
			break
		}
		msgs := make([]natsjs.Message, 0, len(batch))
		sending := batch[:0:0]
		for _, rw := range batch {
			h := nats.Header{}
			if err := json.Unmarshal([]byte(rw.headers), &h); err != nil {
				// Not written by Write (edited by hand, say): the row goes
				// dead with the reason rather than stop every round.
				blocked[rw.aggregateType+"\x00"+rw.aggregateID] = true
				failed = append(failed, failure{row: rw, err: fmt.Errorf("%w: its headers are not a JSON object of string lists: %v", errCorrupt, err)})
				continue
			}
			h.Set("ce-"+sysops.ExtSequence, strconv.FormatInt(rw.aggregateSeq, 10))
			msgs = append(msgs, natsjs.Message{ID: rw.eventID, Subject: rw.subject, Header: h, Data: rw.payload})
			sending = append(sending, rw)
		}
		if len(msgs) == 0 {
			continue
		}
		_, errs := r.pub.PublishBatch(ctx, msgs)
		for i, rw := range sending {
			if errs[i] != nil {
				blocked[rw.aggregateType+"\x00"+rw.aggregateID] = true
				failed = append(failed, failure{row: rw, err: errs[i]})
				continue
			}
			sent = append(sent, rw.seq)
		}
	}
	// A publish that found its stream gone, made again since, is not the
	// row's failure: it goes again, with no attempt counted. Nor is one
	// the broker refused for a state of its own (out of storage, say):
	// the rows wait for it as for a broker that cannot be reached.
	var full error
	failed = slices.DeleteFunc(failed, func(f failure) bool {
		switch {
		case errors.Is(f.err, natsjs.ErrStreamMadeAgain):
		case natsjs.IsUnavailable(f.err):
			full = f.err
		default:
			return false
		}
		round.Interrupted++
		return true
	})
	if full != nil {
		r.cfg.Logger.WarnContext(caller, "outbox: broker refuses messages for now; rows wait for it", "error", full)
		round.BrokerDown = true
	}
	switch {
	case caller.Err() != nil:
		// Stopping is not the broker failing: counting it as an attempt
		// would delay these rows by a backoff on the next start, and
		// enough stops would make them dead.
		round.Interrupted += len(failed)
		failed = nil
	case len(failed) > 0:
		if err := r.reachBroker(caller); err != nil {
			r.cfg.Logger.WarnContext(caller, "outbox: broker unreachable; rows wait for it", "rows", len(failed), "error", err)
			round.BrokerDown = true
			round.Interrupted += len(failed)
			failed = nil
		}
	}
	round.Published = len(sent)
	round.Failed = len(failed)
	round.Dead, err = r.record(context.WithoutCancel(ctx), sent, failed)
	if round.Dead > 0 || err != nil {
		r.forgetDead()
	}
	return round, err
}

// errCorrupt marks a row that cannot be made into a message as stored.
var errCorrupt = errors.New("outbox: row cannot be published as stored")

type failure struct {
	row *row
	err error
}

// reachBroker pings the broker, if the publisher can: nil when it answers
// (or cannot be asked), the reason it is unreachable otherwise.
func (r *Relay) reachBroker(ctx context.Context) error {
	p, ok := r.pub.(interface{ Ping(context.Context) error })
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, min(r.cfg.PublishTimeout, 5*time.Second))
	defer cancel()
	return p.Ping(ctx)
}

// outageWait is how long the relay waits after its n-th round in a row
// found the broker unreachable: PollInterval doubling, at most 5 s, so
// that rows go out within seconds of the broker's return.
func (r *Relay) outageWait(n int) time.Duration {
	return min(r.cfg.PollInterval<<min(max(n-1, 0), 10), 5*time.Second)
}

func (r *Relay) pending(ctx context.Context) ([]*row, error) {
	q, err := r.db.QueryContext(ctx, `SELECT seq, event_id, aggregate_type, aggregate_id, aggregate_seq, subject, payload,
		headers, attempts, next_attempt_at FROM outbox WHERE status = 'pending' ORDER BY seq LIMIT $1`, r.cfg.BatchSize)
	if err != nil {
		return nil, fmt.Errorf("outbox: read pending rows: %w", err)
	}
	defer q.Close()
	var rows []*row
	for q.Next() {
		rw := &row{}
		if err := q.Scan(&rw.seq, &rw.eventID, &rw.aggregateType, &rw.aggregateID, &rw.aggregateSeq, &rw.subject, &rw.payload,
			&rw.headers, &rw.attempts, &rw.nextAttemptAt); err != nil {
			return nil, fmt.Errorf("outbox: read pending rows: %w", err)
		}
		rows = append(rows, rw)
	}
	if err := q.Err(); err != nil {
		return nil, fmt.Errorf("outbox: read pending rows: %w", err)
	}
	return rows, nil
}

// idlePoll is how often a started relay runs a round when nothing wakes
// it: PollInterval, or often enough to keep its lead while idle — an SQLite
// lease renewed before it expires, a PostgreSQL lock session that speaks
// before the server ends it for silence (stallLimit). A relay polling
// rarely (it relies on wake-ups) would otherwise lose the lead whenever
// it had nothing to do, and PostgreSQL would log the session's end.
func (r *Relay) idlePoll() time.Duration {
	return max(min(r.cfg.PollInterval, r.keepLead()), time.Millisecond)
}

// keepLead is the longest a leader may go without a round and keep its
// lead: a third of its lease, or of its lock session's silence limit.
func (r *Relay) keepLead() time.Duration {
	if r.db.Dialect() == sqldb.Postgres {
		return r.stallLimit() / 3
	}
	return r.cfg.LeaseTTL / 3
}

// failureWait is how long the relay waits after its n-th failed round in
// a row (its database refusing writes, say) before the next: PollInterval
// doubling, at most 5 s or keepLead. Every failed round may have
// published its rows without recording it, and the next publishes them
// again; at every poll that would be a storm of copies for the broker to
// drop.
func (r *Relay) failureWait(n int) time.Duration {
	return max(min(r.outageWait(n), r.keepLead()), time.Millisecond)
}

// lockCheckInterval is how often a PostgreSQL relay checks that the
// session holding its lock is alive (more often if its silence limit is
// short, see stallLimit). A relay whose session died may keep publishing
// for up to this long next to the new leader: duplicates, which the
// broker and the inbox drop.
func (r *Relay) lockCheckInterval() time.Duration {
	return min(time.Second, r.stallLimit()/4)
}

// stallLimit is how long the session holding a PostgreSQL relay's lock
// may stay silent before the server ends it, releasing the lock: a leader
// that stops running without dying (a frozen process, a paused machine)
// would otherwise keep the lock, and stall its group, for as long as its
// process lives. A running leader touches the session at every round and
// at most every lockCheckInterval; a round keeps it silent for at most
// PublishTimeout and its reads and writes, which LeaseTTL covers.
func (r *Relay) stallLimit() time.Duration { return r.cfg.LeaseTTL + r.cfg.PublishTimeout }

// deadRefresh is how often the relay re-reads which aggregates have dead
// rows, to see operators' retries and purges. Rows it makes dead itself
// it knows at once; a relay that takes over reads them first.
const deadRefresh = 2 * time.Second

// deadAggregates returns the aggregates with a dead row: their later
// events wait until an operator retries or purges it.
func (r *Relay) deadAggregates(ctx context.Context) (map[string]bool, error) {
	r.mu.Lock()
	cached, fresh := r.dead, time.Since(r.deadAt) < deadRefresh
	r.mu.Unlock()
	if cached != nil && fresh {
		return cached, nil
	}
	q, err := r.db.QueryContext(ctx, `SELECT DISTINCT aggregate_type, aggregate_id FROM outbox WHERE status = 'dead'`)
	if err != nil {
		return nil, fmt.Errorf("outbox: read dead rows: %w", err)
	}
	defer q.Close()
	out := map[string]bool{}
	for q.Next() {
		var t, id string
		if err := q.Scan(&t, &id); err != nil {
			return nil, err
		}
		out[t+"\x00"+id] = true
	}
	if err := q.Err(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.dead, r.deadAt = out, time.Now()
	r.mu.Unlock()
	return out, nil
}

// forgetDead makes the next round re-read the dead rows.
func (r *Relay) forgetDead() {
	r.mu.Lock()
	r.dead = nil
	r.mu.Unlock()
}

// record marks the sent rows and the failures in one transaction.
func (r *Relay) record(ctx context.Context, sent []int64, failed []failure) (dead int, err error) {
	if len(sent) == 0 && len(failed) == 0 {
		return 0, nil
	}
	now := micros(time.Now())
	if len(failed) == 0 && (r.db.Dialect() == sqldb.Postgres || len(sent) <= 1000) {
		// One statement needs no transaction: one round trip.
		if err := r.markSent(ctx, r.db, now, sent); err != nil {
			return 0, fmt.Errorf("outbox: record round: %w", err)
		}
		return 0, nil
	}
	err = sqldb.RunInTx(ctx, r.db, func(tx *sql.Tx) error {
		dead = 0
		for chunk := range chunks(sent, 1000) {
			if err := r.markSent(ctx, tx, now, chunk); err != nil {
				return err
			}
		}
		for _, f := range failed {
			attempts := f.row.attempts + 1
			status := StatusPending
			// A message the broker refuses for what it is (too large for
			// the stream, say), or a row that cannot make one, is dead at
			// once: no retry can succeed.
			if attempts >= r.cfg.MaxAttempts || natsjs.IsRejected(f.err) || errors.Is(f.err, errCorrupt) {
				status = StatusDead
				dead++
			}
			next := now + r.cfg.Backoff(attempts).Microseconds()
			if _, err := tx.ExecContext(ctx, `UPDATE outbox SET attempts = $1, status = $2, last_error = $3,
				next_attempt_at = $4 WHERE seq = $5`, attempts, string(status), oneLine(f.err), next, f.row.seq); err != nil {
				return fmt.Errorf("mark failed: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("outbox: record round: %w", err)
	}
	for _, f := range failed {
		r.cfg.Logger.WarnContext(ctx, "outbox: publish failed", "event_id", f.row.eventID, "attempt", f.row.attempts+1, "error", f.err)
	}
	return dead, nil
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// markSent marks rows sent, or deletes them when nothing is retained.
func (r *Relay) markSent(ctx context.Context, db execer, now int64, seqs []int64) error {
	var err error
	switch {
	// On PostgreSQL the statements are planned at each call: a plan cached
	// on a connection while the outbox was small scans the whole table
	// for its array of seqs, which made a relay draining a backlog on a
	// freshly created outbox ten times slower.
	case r.db.Dialect() == sqldb.Postgres && r.cfg.Retention <= 0:
		_, err = db.ExecContext(ctx, `DELETE FROM outbox WHERE seq = ANY($1)`, sqldb.PlanPerCall, seqs)
	case r.db.Dialect() == sqldb.Postgres:
		_, err = db.ExecContext(ctx, `UPDATE outbox SET status = 'sent', sent_at = $1, attempts = attempts + 1,
			last_error = NULL WHERE seq = ANY($2)`, sqldb.PlanPerCall, now, seqs)
	case r.cfg.Retention <= 0:
		in, args := inList(seqs, 1)
		_, err = db.ExecContext(ctx, `DELETE FROM outbox WHERE seq IN (`+in+`)`, args...)
	default:
		in, args := inList(seqs, 2)
		_, err = db.ExecContext(ctx, `UPDATE outbox SET status = 'sent', sent_at = $1, attempts = attempts + 1,
			last_error = NULL WHERE seq IN (`+in+`)`, append([]any{now}, args...)...)
	}
	if err != nil {
		return fmt.Errorf("mark sent: %w", err)
	}
	return nil
}

// cleanEvery is how often the relay deletes sent rows past the retention.
// Without retention there are only those left by an earlier
// configuration, so once a minute will do.
func (r *Relay) cleanEvery() time.Duration {
	if r.cfg.Retention <= 0 {
		return time.Minute
	}
	return min(r.cfg.Retention/10, time.Minute)
}

// DeleteSent deletes sent rows older than the retention (all of them
// without retention) and returns how many.
func (r *Relay) DeleteSent(ctx context.Context) (int64, error) {
	res, err := r.db.ExecContext(ctx, `DELETE FROM outbox WHERE status = 'sent' AND sent_at < $1`,
		micros(time.Now().Add(-r.cfg.Retention)))
	if err != nil {
		return 0, fmt.Errorf("outbox: delete sent rows: %w", err)
	}
	return res.RowsAffected()
}

func chunks[T any](s []T, n int) func(yield func([]T) bool) {
	return func(yield func([]T) bool) {
		for len(s) > 0 {
			k := min(n, len(s))
			if !yield(s[:k]) {
				return
			}
			s = s[k:]
		}
	}
}

// inList returns "$first, $first+1, ..." for ids and the ids as arguments.
func inList(ids []int64, first int) (string, []any) {
	var b strings.Builder
	args := make([]any, len(ids))
	for i, id := range ids {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("$" + strconv.Itoa(first+i))
		args[i] = id
	}
	return b.String(), args
}

func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

// Leadership: one relay of a group publishes at a time.

func (r *Relay) isLeader() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lockConn != nil || time.Now().Before(r.leaseUntil)
}

// lead reports whether this relay may publish now, taking or renewing the
// lock or lease as needed.
func (r *Relay) lead(ctx context.Context) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if r.db.Dialect() == sqldb.Postgres {
		if r.lockConn != nil {
			// The lock lives as long as this session; check now and then
			// that it still does.
			if time.Since(r.lockChecked) < r.lockCheckInterval() {
				return true, nil
			}
			err := r.lockConn.PingContext(ctx)
			if err == nil {
				r.lockChecked = time.Now()
				return true, nil
			}
			if ctx.Err() != nil {
				return false, ctx.Err() // stopping; release() unlocks
			}
			discard(r.lockConn)
			r.lockConn = nil
		}
		conn, err := r.db.Writer().Conn(ctx)
		if err != nil {
			return false, fmt.Errorf("outbox: relay lock: %w", err)
		}
		var got bool
		// Keyed by schema too: several outboxes may share one database.
		if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock(hashtextextended(current_schema() || '.' || $1, 0))`,
			r.lockName()).Scan(&got); err != nil || !got {
			conn.Close()
			if err != nil {
				return false, fmt.Errorf("outbox: relay lock: %w", err)
			}
			return false, nil
		}
		// Bound the session's silence (idle_session_timeout, PostgreSQL 14
		// and later); on an older server a stalled leader keeps the lock
		// until its process dies.
		if _, err := conn.ExecContext(ctx, `SELECT set_config('idle_session_timeout', $1, false)`,
			strconv.FormatInt(r.stallLimit().Milliseconds(), 10)); err != nil && ctx.Err() == nil {
			r.cfg.Logger.WarnContext(ctx, "outbox: cannot bound the relay lock session's silence; a stalled leader keeps the lock until its process dies",
				"error", err)
		}
		r.lockConn, r.lockChecked = conn, time.Now()
		r.dead = nil // read afresh what the previous leader left
		return true, nil
	}
	now := time.Now()
	if now.Before(r.leaseUntil.Add(-r.cfg.LeaseTTL / 2)) {
		return true, nil
	}
	until := now.Add(r.cfg.LeaseTTL)
	res, err := r.db.ExecContext(ctx, `INSERT INTO outbox_lease (name, holder, expires_at) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
		WHERE outbox_lease.holder = excluded.holder OR outbox_lease.expires_at < $4`,
		r.cfg.Name, r.holder, micros(until), micros(now))
	if err != nil {
		return false, fmt.Errorf("outbox: relay lease: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		r.leaseUntil = time.Time{}
		return false, nil
	}
	if r.leaseUntil.IsZero() {
		r.dead = nil // newly leading: read afresh what the previous leader left
	}
	r.leaseUntil = until
	return true, nil
}

func (r *Relay) lockName() string { return "sysops.outbox." + r.cfg.Name }

func (r *Relay) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lockConn != nil {
		// The session goes back to the pool: unlock explicitly, and if
		// that fails close the session itself, which releases the lock.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := r.lockConn.ExecContext(ctx, `SELECT pg_advisory_unlock(hashtextextended(current_schema() || '.' || $1, 0)),
			set_config('idle_session_timeout', '0', false)`, r.lockName()); err != nil {
			discard(r.lockConn)
		} else {
			r.lockConn.Close()
		}
		cancel()
		r.lockConn = nil
	}
	if !r.leaseUntil.IsZero() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = r.db.ExecContext(ctx, `DELETE FROM outbox_lease WHERE name = $1 AND holder = $2`, r.cfg.Name, r.holder)
		r.leaseUntil = time.Time{}
	}
}

// discard closes a pooled connection's session instead of returning it to
// the pool.
func discard(c *sql.Conn) {
	_ = c.Raw(func(any) error { return driver.ErrBadConn })
	c.Close()
}
