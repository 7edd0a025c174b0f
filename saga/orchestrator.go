package saga

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/sony/gobreaker/v2"

	"github.com/sysops-squad/sysops/sqldb"
)

// Config configures an [Orchestrator]. The zero value is usable.
type Config struct {
	// Owner names this instance in leases. Default: a random id. An
	// instance restarted under the same name takes its own sagas back at
	// once instead of waiting for their leases to expire — so the name
	// must never be used by two running instances at once (a host and
	// listen address is a good one).
	Owner string
	// LeaseTTL is how long a saga stays with an instance that stops
	// writing to its log (a crashed one); then another takes it over.
	// Default 15 seconds; it must exceed every step's Timeout and
	// backoff.
	LeaseTTL time.Duration
	// PollInterval is how often the instance looks for sagas to resume or
	// take over. Default 1 second.
	PollInterval time.Duration
	// MaxSagas caps the sagas this instance drives at once. Default 1024.
	MaxSagas int
	// ParticipantConcurrency caps concurrent calls to one participant.
	// Default 64.
	ParticipantConcurrency int
	// BreakerFailures consecutive failed calls open a participant's
	// circuit breaker; it lets one probe through after BreakerCooldown.
	// Calls refused by an open breaker do not use up retry budgets.
	// Defaults 5 and 1 second.
	BreakerFailures uint32
	BreakerCooldown time.Duration
	// LogWriters is how many shared log transactions may be in flight at
	// once. Default 1: the writes that arrive while one commits go
	// together in the next. (On PostgreSQL a shared log transaction is one
	// round trip; with 4 writers, the earlier default, the bench committed
	// 1.7 writes per transaction against 3.3 with one, and in 5 alternated
	// runs at concurrency 64 one writer drove 398-523 committed sagas/s
	// against 403-478.)
	LogWriters int
	// MaxBatch caps the calls in one call of a step's ActionBatch or
	// CompensateBatch. Default 64.
	MaxBatch int
	// Clock is the time leases, deadlines and due times go by: the
	// database's, so that instances on machines whose clocks drift apart
	// agree on when a lease expires. Default: one of the orchestrator's
	// own, measured against its database at Start and every minute.
	Clock  *sqldb.Clock
	Logger *slog.Logger
}

type defKey struct {
	name    string
	version int
}

// Orchestrator runs sagas: it logs every step before calling it and after
// it returns, drives sagas forward or back, resumes unfinished ones at
// start and takes over those of instances that died. Several instances
// may share one database.
type Orchestrator struct {
	db      *sqldb.DB
	cfg     Config
	defs    map[defKey]Definition
	latest  map[string]Definition
	log     *committer
	cancels cancelReader

	mu       sync.Mutex
	parts    map[string]*participant
	batchers map[batchKey]*batcher
	active   map[string]bool
	waiters  map[string][]*waiter

	// knownArgs are the definition versions this instance has, name and
	// version in turn (see known); strangersAt is when it last looked for
	// sagas that wait for another (microseconds).
	knownArgs   []any
	strangersAt atomic.Int64

	slots     chan struct{}
	ctx       context.Context
	cancel    context.CancelFunc
	logCancel context.CancelFunc
	wg        sync.WaitGroup
	started   bool
}

type participant struct {
	cb    *gobreaker.CircuitBreaker[json.RawMessage]
	limit chan struct{}
	// Calls made (a batch is one), those of them that failed, and those
	// the breaker refused without making them.
	made, failed, refused atomic.Int64
}

// count records how the breaker let a call through: refused, or made
// (and failed, unless err is nil or the participant's refusal).
func (p *participant) count(err error, refused bool) {
	switch {
	case refused:
		p.refused.Add(1)
	case err != nil && !IsRejection(err):
		p.made.Add(1)
		p.failed.Add(1)
	default:
		p.made.Add(1)
	}
}

// New returns an orchestrator over db (whose saga tables exist, see
// [Migrations]) for the given definitions.
func New(db *sqldb.DB, cfg Config, defs ...Definition) (*Orchestrator, error) {
	if len(defs) == 0 {
		return nil, errNoDefinitions
	}
	cfg.Owner = cmp.Or(cfg.Owner, uuid.NewString())
	cfg.LeaseTTL = cmp.Or(cfg.LeaseTTL, 15*time.Second)
	cfg.PollInterval = cmp.Or(cfg.PollInterval, time.Second)
	cfg.MaxSagas = cmp.Or(cfg.MaxSagas, 1024)
	cfg.ParticipantConcurrency = cmp.Or(cfg.ParticipantConcurrency, 64)
	cfg.BreakerFailures = cmp.Or(cfg.BreakerFailures, 5)
	cfg.BreakerCooldown = cmp.Or(cfg.BreakerCooldown, time.Second)
	cfg.LogWriters = cmp.Or(max(cfg.LogWriters, 0), 1)
	cfg.MaxBatch = cmp.Or(max(cfg.MaxBatch, 0), 64)
	if cfg.Clock == nil {
		cfg.Clock = &sqldb.Clock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	o := &Orchestrator{db: db, cfg: cfg, defs: map[defKey]Definition{}, latest: map[string]Definition{},
		log: newCommitter(db), parts: map[string]*participant{}, batchers: map[batchKey]*batcher{}, active: map[string]bool{}, waiters: map[string][]*waiter{},
		slots: make(chan struct{}, cfg.MaxSagas)}
	o.cancels.read = o.readCancels
	for _, d := range defs {
		if err := d.validate(); err != nil {
			return nil, err
		}
		d = d.withDefaults()
		for _, s := range d.Steps {
			if budget := s.Timeout + s.Retry.Max; budget >= cfg.LeaseTTL {
				return nil, fmt.Errorf("saga: %s v%d step %s: timeout plus backoff (%v) must be below LeaseTTL (%v)",
					d.Name, d.Version, s.Name, budget, cfg.LeaseTTL)
			}
		}
		k := defKey{d.Name, d.Version}
		if _, dup := o.defs[k]; dup {
			return nil, fmt.Errorf("saga: definition %s v%d registered twice", d.Name, d.Version)
		}
		o.defs[k] = d
		if d.Version > o.latest[d.Name].Version {
			o.latest[d.Name] = d
		}
	}
	for k := range o.defs {
		o.knownArgs = append(o.knownArgs, k.name, k.version)
	}
	return o, nil
}

// known is the condition that a saga's definition version is one this
// instance has, its arguments (knownArgs) numbered from $first.
func (o *Orchestrator) known(first int) string {
	var b strings.Builder
	b.WriteString("(")
	for i := 0; i < len(o.knownArgs); i += 2 {
		if i > 0 {
			b.WriteString(" OR ")
		}
		fmt.Fprintf(&b, "(definition = $%d AND version = $%d)", first+i, first+i+1)
	}
	b.WriteString(")")
	return b.String()
}

// Start resumes the unfinished sagas of the log and keeps looking for
// sagas to take over until ctx ends or Stop is called.
func (o *Orchestrator) Start(ctx context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.started {
		return errors.New("saga: orchestrator already started")
	}
	o.started = true
	o.ctx, o.cancel = context.WithCancel(ctx)
	var logCtx context.Context
	logCtx, o.logCancel = context.WithCancel(context.WithoutCancel(ctx))
	for range o.cfg.LogWriters {
		go o.log.run(logCtx)
	}
	syncClock := func() {
		sctx, cancel := context.WithTimeout(o.ctx, 5*time.Second)
		defer cancel()
		if err := o.cfg.Clock.Sync(sctx, o.db); err != nil && o.ctx.Err() == nil {
			o.cfg.Logger.WarnContext(o.ctx, "saga: cannot read the database's clock; using this machine's until it can", "error", err)
		}
	}
	syncClock() // before the first lease is written
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		t := time.NewTicker(o.cfg.PollInterval)
		defer t.Stop()
		for {
			syncClock()
			if _, err := o.RunOnce(o.ctx); err != nil && o.ctx.Err() == nil {
				o.cfg.Logger.WarnContext(o.ctx, "saga: resume", "error", err)
			}
			select {
			case <-o.ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return nil
}

// Stop stops driving sagas, releasing their leases so that another
// instance can take them over at once, and waits for the drivers to end.
func (o *Orchestrator) Stop() {
	o.mu.Lock()
	started := o.started
	o.mu.Unlock()
	if !started {
		return
	}
	o.cancel()
	o.wg.Wait()
	o.logCancel()
}

// Stats counts log writes and the commits that carried them, the calls
// of batched steps and the batches that carried them, and what each
// participant's circuit breaker let through.
type Stats struct {
	LogWrites    int64
	LogCommits   int64
	BatchedCalls int64
	Batches      int64
	// Participants, by name.
	Participants map[string]ParticipantStats
}

// ParticipantStats counts the calls to one participant (a batch is one
// call): those made, those of them that failed (a refusal, 4xx, is not a
// failure), and those its circuit breaker refused without making them.
// While a participant is down, Made stays near one probe per
// BreakerCooldown however many sagas wait for it: no retry storm.
type ParticipantStats struct {
	Made, Failed, Refused int64
}

// Stats returns the orchestrator's counters.
func (o *Orchestrator) Stats() Stats {
	st := Stats{LogWrites: o.log.writes.Load(), LogCommits: o.log.commits.Load(), Participants: map[string]ParticipantStats{}}
	o.mu.Lock()
	for _, b := range o.batchers {
		st.BatchedCalls += b.items.Load()
		st.Batches += b.calls.Load()
	}
	for name, p := range o.parts {
		st.Participants[name] = ParticipantStats{Made: p.made.Load(), Failed: p.failed.Load(), Refused: p.refused.Load()}
	}
	o.mu.Unlock()
	return st
}

// RunOnce claims the sagas that need a driver — unfinished, not leased or
// with an expired lease, due — and starts driving them. It returns how
// many it claimed.
func (o *Orchestrator) RunOnce(ctx context.Context) (int, error) {
	now := o.cfg.Clock.Now()
	// Only sagas of a definition version this instance has: one begun on
	// a version it lacks (a rolling upgrade under way: an older instance
	// meets a newer saga, or the other way round) waits for an instance
	// that has it.
	o.warnStrangers(ctx, now)
	rows, err := o.db.QueryContext(ctx, `SELECT id FROM saga WHERE state IN ('running', 'compensating') AND next_run_at <= $1
		AND (lease_owner = '' OR lease_until < $1 OR lease_owner = $2) AND `+o.known(3)+` ORDER BY next_run_at LIMIT 256`,
		append([]any{us(now), o.cfg.Owner}, o.knownArgs...)...)
	if err != nil {
		return 0, fmt.Errorf("saga: find sagas to resume: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	// On PostgreSQL a saga whose row another session has locked (its
	// driver writing its log right now, or a stalled process inside a
	// transaction) is skipped, not waited for: waiting would hold up every
	// claim behind it, for as long as that session keeps the lock.
	claim := `UPDATE saga SET lease_owner = $1, lease_until = $2 WHERE id = $3
		AND state IN ('running', 'compensating') AND (lease_owner = '' OR lease_until < $4 OR lease_owner = $1)`
	if o.db.Dialect() == sqldb.Postgres {
		claim = `UPDATE saga SET lease_owner = $1, lease_until = $2 WHERE id = (SELECT id FROM saga WHERE id = $3
			AND state IN ('running', 'compensating') AND (lease_owner = '' OR lease_until < $4 OR lease_owner = $1)
			FOR UPDATE SKIP LOCKED)`
	}
	claimed := 0
	for _, id := range ids {
		if o.isActive(id) {
			continue
		}
		res, err := o.db.ExecContext(ctx, claim, o.cfg.Owner, us(now.Add(o.cfg.LeaseTTL)), id, us(now))
		if err != nil {
			return claimed, fmt.Errorf("saga: claim %s: %w", id, err)
		}
		if n, _ := res.RowsAffected(); n == 1 {
			o.cfg.Logger.InfoContext(ctx, "saga: resuming", "saga", id)
			claimed++
			o.launch(id, nil)
		}
	}
	return claimed, nil
}

// strangersEvery is how often an instance looks for unfinished sagas of
// definition versions it does not have.
const strangersEvery = time.Minute

// warnStrangers logs, at most every strangersEvery, the unfinished sagas
// this instance leaves to others because it lacks their definition
// version: if no instance has it, they wait until one that does starts.
func (o *Orchestrator) warnStrangers(ctx context.Context, now time.Time) {
	last := o.strangersAt.Load()
	if now.UnixMicro()-last < strangersEvery.Microseconds() || !o.strangersAt.CompareAndSwap(last, now.UnixMicro()) {
		return
	}
	rows, err := o.db.QueryContext(ctx, `SELECT definition, version, count(*) FROM saga
		WHERE state IN ('running', 'compensating') AND NOT `+o.known(1)+` GROUP BY definition, version`, o.knownArgs...)
	if err != nil {
		return
	}
	defer rows.Close()
	for rows.Next() {
		var def string
		var version, n int
		if rows.Scan(&def, &version, &n) == nil {
			o.cfg.Logger.WarnContext(ctx, "saga: unfinished sagas wait for an instance that has their definition version",
				"definition", def, "version", version, "sagas", n)
		}
	}
}

func (o *Orchestrator) isActive(id string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.active[id]
}

// launch drives a saga this instance holds the lease of, in the
// background. begun is the saga as Begin just logged it, or nil to read
// it from the log.
func (o *Orchestrator) launch(id string, begun *Saga) {
	o.mu.Lock()
	if o.active[id] || o.ctx == nil || o.ctx.Err() != nil {
		o.mu.Unlock()
		return
	}
	o.active[id] = true
	o.wg.Add(1)
	o.mu.Unlock()
	go func() {
		defer o.wg.Done()
		select {
		case o.slots <- struct{}{}:
		case <-o.ctx.Done():
			o.finish(id, false, nil)
			return
		}
		defer func() { <-o.slots }()
		s, err := o.drive(o.ctx, id, begun)
		if err != nil && o.ctx.Err() == nil {
			o.cfg.Logger.ErrorContext(o.ctx, "saga: drive", "saga", id, "error", err)
		}
		if err != nil {
			s = nil
		}
		o.finish(id, err == nil, s)
	}()
}

// waiter is a Wait for a saga this instance drives. s is the saga as its
// driver last logged it, if the driver took it to its end.
type waiter struct {
	done chan struct{}
	s    *Saga
}

// finish releases the saga's lease (unless its last log write did) and
// wakes its waiters, handing them the saga as last logged (s, nil if its
// driver stopped before the end).
func (o *Orchestrator) finish(id string, released bool, s *Saga) {
	if !released {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = o.db.ExecContext(ctx, `UPDATE saga SET lease_owner = '', lease_until = 0 WHERE id = $1 AND lease_owner = $2`, id, o.cfg.Owner)
	}
	o.mu.Lock()
	delete(o.active, id)
	ws := o.waiters[id]
	delete(o.waiters, id)
	o.mu.Unlock()
	for _, w := range ws {
		if s != nil {
			c := *s
			c.Steps = slices.Clone(s.Steps)
			w.s = &c
		}
		close(w.done)
	}
}

// Begin starts a saga of the latest version of the named definition and
// drives it in the background. id may be empty (one is made up); a saga
// that exists already with this id is not started again — Begin is
// idempotent by id.
func (o *Orchestrator) Begin(ctx context.Context, definition, id string, input any) (string, error) {
	def, ok := o.latest[definition]
	if !ok {
		return "", fmt.Errorf("%w: %q", ErrUnknown, definition)
	}
	if o.ctx == nil || o.ctx.Err() != nil {
		return "", errStopped
	}
	if id == "" {
		id = uuid.Must(uuid.NewV7()).String()
	} else if !keyPart(id, MaxIDLength) {
		return "", fmt.Errorf("%w: %q is not 1 to %d printable ASCII characters without spaces (the steps' idempotency keys are made of it)",
			ErrInvalidID, id, MaxIDLength)
	}
	in, err := json.Marshal(input)
	if err != nil {
		return "", fmt.Errorf("saga: input of %s: %w", definition, err)
	}
	now := o.cfg.Clock.Now()
	// As Get would read it back: the driver needs no read.
	begun := &Saga{ID: id, Definition: def.Name, Version: def.Version, Input: rawOrNil(string(in)), State: Running,
		DeadlineAt: fromUS(us(now.Add(def.Deadline))), CreatedAt: fromUS(us(now)), UpdatedAt: fromUS(us(now)),
		LeaseOwner: o.cfg.Owner}
	for i, s := range def.Steps {
		begun.Steps = append(begun.Steps, StepRecord{Index: i, Name: s.Name, Status: StepPending, UpdatedAt: begun.CreatedAt})
	}
	// The first step's start is logged with the saga: the driver calls it
	// without a write of its own.
	begun.Steps[0].Status, begun.Steps[0].Attempts = StepRunning, 1
	steps, err := encodeSteps(begun.Steps)
	if err != nil {
		return "", fmt.Errorf("saga: begin %s: %w", definition, err)
	}
	var created *Saga
	err = o.log.exec(ctx, sqldb.Stmt{Query: `INSERT INTO saga (id, definition, version, input, state, deadline_at, next_run_at,
		lease_owner, lease_until, created_at, updated_at, steps) VALUES ($1, $3, $4, $5, 'running', $6, $2, $7, $8, $2, $2, $9)
		ON CONFLICT (id) DO NOTHING`,
		Args: []any{id, us(now), def.Name, def.Version, string(in), us(now.Add(def.Deadline)), o.cfg.Owner, us(now.Add(o.cfg.LeaseTTL)), steps}},
		func(rows int64) error {
			if created = nil; rows > 0 {
				created = begun
			}
			return nil
		})
	if err != nil {
		return "", fmt.Errorf("saga: begin %s: %w", definition, err)
	}
	if created != nil {
		o.launch(id, created)
	}
	return id, nil
}

// Wait blocks until the saga is final or needs attention, or ctx ends,
// and returns it as the log has it. For a saga this instance drove to
// its end, that is the driver's copy of what it last wrote, with no read
// of the log — except for a cancel request that came too late to act on
// (the saga had passed its last check), which only [Get] shows.
func (o *Orchestrator) Wait(ctx context.Context, id string) (Saga, error) {
	for {
		w := &waiter{done: make(chan struct{})}
		o.mu.Lock()
		o.waiters[id] = append(o.waiters[id], w)
		driving := o.active[id]
		o.mu.Unlock()
		s, done, err := o.waitOnce(ctx, id, w, driving)
		o.unwait(id, w)
		if done {
			return s, err
		}
	}
}

// unwait takes w back from id's waiters, if the driver has not already
// woken it: a Wait that returns, or looks again, leaves nothing behind.
func (o *Orchestrator) unwait(id string, w *waiter) {
	o.mu.Lock()
	defer o.mu.Unlock()
	ws := slices.DeleteFunc(o.waiters[id], func(x *waiter) bool { return x == w })
	if len(ws) == 0 {
		delete(o.waiters, id)
	} else {
		o.waiters[id] = ws
	}
}

// waitOnce is one look of Wait, registered as w; done says whether Wait
// returns s and err, or looks again.
func (o *Orchestrator) waitOnce(ctx context.Context, id string, w *waiter, driving bool) (s Saga, done bool, err error) {
	// A saga this instance is driving is not final yet: its driver hands
	// it over when done with it.
	if !driving {
		if s, err = Get(ctx, o.db, id); err != nil {
			return s, true, err
		}
		if s.State.Final() || s.State == NeedsAttention {
			return s, true, nil
		}
	}
	select {
	case <-ctx.Done():
		if driving {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			s, _ = Get(rctx, o.db, id)
			cancel()
		}
		return s, true, ctx.Err()
	case <-w.done:
		if w.s != nil && (w.s.State.Final() || w.s.State == NeedsAttention) {
			return *w.s, true, nil
		}
	case <-time.After(250 * time.Millisecond): // driven by another instance
	}
	return Saga{}, false, nil
}

// Run begins a saga and waits for its outcome.
func (o *Orchestrator) Run(ctx context.Context, definition, id string, input any) (Saga, error) {
	id, err := o.Begin(ctx, definition, id, input)
	if err != nil {
		return Saga{}, err
	}
	return o.Wait(ctx, id)
}

// saveStepAndSaga logs the saga's state and its steps in a shared log
// transaction, if this instance still holds the saga's lease, and renews
// the lease. The given steps (nil ones are skipped) are the ones that
// changed: their times move. It is one statement, one row.
func (o *Orchestrator) saveStepAndSaga(ctx context.Context, s *Saga, steps ...*StepRecord) error {
	now := o.cfg.Clock.Now()
	at := fromUS(us(now))
	for _, r := range steps {
		if r != nil {
			r.UpdatedAt = at
		}
	}
	s.UpdatedAt = at
	var finished any
	if s.State.Final() {
		s.FinishedAt = &at
		finished = us(at)
	}
	// A saga that stops here (final, or needing attention) gives its
	// lease up in the same write: lease_until 0 clears the owner.
	lease := us(now.Add(o.cfg.LeaseTTL))
	if s.State.Final() || s.State == NeedsAttention {
		lease, s.LeaseOwner = 0, ""
	}
	cols, err := encodeSteps(s.Steps)
	if err != nil {
		return fmt.Errorf("saga: log %s: %w", s.ID, err)
	}
	return o.log.exec(ctx, sqldb.Stmt{Query: `UPDATE saga SET lease_owner = CASE WHEN CAST($1 AS BIGINT) = 0 THEN '' ELSE lease_owner END,
		lease_until = $1, updated_at = $2, state = $5, reason = $6, last_error = $7, finished_at = $8, steps = $9
		WHERE id = $3 AND lease_owner = $4`,
		Args: []any{lease, us(at), s.ID, o.cfg.Owner, string(s.State), s.Reason, s.LastError, finished, cols}},
		func(rows int64) error {
			if rows == 0 {
				return ErrLeaseLost
			}
			return nil
		})
}

// drive moves a saga this instance leases until it is final, needs
// attention, or the instance stops.
func (o *Orchestrator) drive(ctx context.Context, id string, begun *Saga) (*Saga, error) {
	var s Saga
	if begun != nil {
		s = *begun
	} else {
		var err error
		if s, err = Get(ctx, o.db, id); errors.Is(err, ErrUnreadable) {
			return nil, o.setAside(ctx, id, err)
		} else if err != nil {
			return nil, err
		}
	}
	def, ok := o.defs[defKey{s.Definition, s.Version}]
	switch {
	case !ok:
		s.State, s.LastError = NeedsAttention, fmt.Sprintf("definition %s v%d is not registered with this orchestrator", s.Definition, s.Version)
		return &s, o.saveStepAndSaga(ctx, &s, nil)
	case len(s.Steps) != len(def.Steps):
		s.State, s.LastError = NeedsAttention, fmt.Sprintf("the log has %d steps, definition %s v%d has %d", len(s.Steps), s.Definition, s.Version, len(def.Steps))
		return &s, o.saveStepAndSaga(ctx, &s, nil)
	case s.State == Running:
		return &s, o.forward(ctx, &s, def, begun != nil)
	case s.State == Compensating:
		return &s, o.compensate(ctx, &s, def)
	}
	return &s, nil
}

// setAside makes a saga whose log row cannot be read need attention,
// keeping why, and gives its lease up: driving it could only fail again
// at every poll. A person reads the row and resolves it.
func (o *Orchestrator) setAside(ctx context.Context, id string, why error) error {
	o.cfg.Logger.ErrorContext(ctx, "saga: log row unreadable; it needs attention", "saga", id, "error", why)
	now := us(o.cfg.Clock.Now())
	_, err := o.db.ExecContext(ctx, `UPDATE saga SET state = 'needs_attention', last_error = $1, updated_at = $2,
		lease_owner = '', lease_until = 0 WHERE id = $3 AND lease_owner = $4`, why.Error(), now, id, o.cfg.Owner)
	return err
}

func outputs(s *Saga) map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	for _, r := range s.Steps {
		if r.Status == StepDone || (r.Status != StepPending && len(r.Output) > 0) {
			out[r.Name] = r.Output
		}
	}
	return out
}

// readCancels reads the cancel requests of every running saga. Requests
// are rare and a saga turns back soon after one, so the index this reads
// (saga_cancel_requested) is nearly always empty.
func (o *Orchestrator) readCancels(ctx context.Context) (map[string]string, error) {
	// Planned at each read on PostgreSQL: a plan cached on a connection
	// while the log was nearly empty scans the whole table (1.2 ms a read
	// at 10,000 sagas in the bench) instead of the index.
	var args []any
	if o.db.Dialect() == sqldb.Postgres {
		args = append(args, sqldb.PlanPerCall)
	}
	rows, err := o.db.QueryContext(ctx, `SELECT id, cancel_reason FROM saga
		WHERE cancel_reason <> '' AND state = 'running'`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, reason string
		if err := rows.Scan(&id, &reason); err != nil {
			return nil, err
		}
		out[id] = reason
	}
	return out, rows.Err()
}

// stopReason says why a saga running forward must turn back: a cancel
// request or its deadline. Past a Forward step there is no turning back.
func (o *Orchestrator) stopReason(ctx context.Context, s *Saga, def Definition) string {
	for i, r := range s.Steps {
		if def.Steps[i].Forward && r.Status != StepPending {
			return ""
		}
	}
	if cancel, err := o.cancels.reason(ctx, s.ID); err == nil && cancel != "" {
		s.CancelReason = cancel
		return "cancelled: " + cancel
	}
	if o.cfg.Clock.Now().After(s.DeadlineAt) {
		return "deadline exceeded"
	}
	return ""
}

// forward drives s forward from its first step not done. begun says s is
// as Begin logged it: its first step's start is logged already.
func (o *Orchestrator) forward(ctx context.Context, s *Saga, def Definition, begun bool) error {
	// done is a step whose success is not logged yet: it goes in the same
	// write as the next step's start (nothing happens in between).
	var done *StepRecord
	for i, step := range def.Steps {
		r := &s.Steps[i]
		if r.Status == StepDone || r.Status == StepSkipped {
			continue
		}
		for {
			// A step Begin logged as started is not called yet: it is
			// looked at as pending (even a Forward one can turn back).
			var reset *StepRecord
			if begun {
				r.Status, r.Attempts, reset = StepPending, 0, r
			}
			if reason := o.stopReason(ctx, s, def); reason != "" {
				s.State, s.Reason = Compensating, reason
				if err := o.saveStepAndSaga(ctx, s, done, reset); err != nil {
					return err
				}
				return o.compensate(ctx, s, def)
			}
			r.Status = StepRunning
			r.Attempts++
			if !begun {
				if err := o.saveStepAndSaga(ctx, s, done, r); err != nil { // before the call
					return err
				}
				done = nil
			}
			begun = false
			out, err, refused := o.invoke(ctx, s, def, i, false, r.Attempts)
			if err == nil {
				r.Status, r.Output, r.LastError = StepDone, out, ""
				done = r // logged with the next write, before anything else is called
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if refused { // the breaker refused it: not an attempt
				r.Attempts--
			}
			r.LastError = err.Error()
			if IsRejection(err) || r.Attempts >= step.Retry.MaxAttempts {
				if step.Forward {
					s.State, s.LastError = NeedsAttention, fmt.Sprintf("step %s: %v", step.Name, err)
					return o.saveStepAndSaga(ctx, s, r)
				}
				r.Status = StepFailed
				s.State, s.Reason, s.LastError = Compensating, fmt.Sprintf("step %s failed: %v", step.Name, err), r.LastError
				if err := o.saveStepAndSaga(ctx, s, r); err != nil {
					return err
				}
				return o.compensate(ctx, s, def)
			}
			if err := o.saveStepAndSaga(ctx, s, r); err != nil {
				return err
			}
			if err := o.backoff(ctx, step.Retry, r.Attempts, refused); err != nil {
				return err
			}
		}
	}
	s.State = Committed
	return o.saveStepAndSaga(ctx, s, done)
}

func (o *Orchestrator) compensate(ctx context.Context, s *Saga, def Definition) error {
	var undone *StepRecord // logged with the next write, as in forward
	for i := len(def.Steps) - 1; i >= 0; i-- {
		step, r := def.Steps[i], &s.Steps[i]
		switch {
		case r.Status == StepPending || r.Status == StepCompensated || r.Status == StepSkipped:
			continue
		case r.Attempts == 0 && r.Status != StepCompensating:
			continue // never called
		case (step.Compensate == nil && step.CompensateBatch == nil) || step.Forward:
			r.Status = StepCompensated
			if err := o.saveStepAndSaga(ctx, s, undone, r); err != nil {
				return err
			}
			undone = nil
			continue
		}
		for {
			r.Status = StepCompensating
			r.CompensationAttempts++
			if err := o.saveStepAndSaga(ctx, s, undone, r); err != nil {
				return err
			}
			undone = nil
			_, err, refused := o.invoke(ctx, s, def, i, true, r.CompensationAttempts)
			if err == nil {
				r.Status, r.LastError = StepCompensated, ""
				undone = r
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if refused {
				r.CompensationAttempts--
			}
			r.LastError = err.Error()
			if r.CompensationAttempts >= step.CompensationRetry.MaxAttempts {
				s.State, s.LastError = NeedsAttention, fmt.Sprintf("compensate %s: %v", step.Name, err)
				return o.saveStepAndSaga(ctx, s, r)
			}
			if err := o.saveStepAndSaga(ctx, s, r); err != nil {
				return err
			}
			if err := o.backoff(ctx, step.CompensationRetry, r.CompensationAttempts, refused); err != nil {
				return err
			}
		}
	}
	s.State = Compensated
	return o.saveStepAndSaga(ctx, s, undone)
}

// backoff sleeps before the next attempt: exponential with full jitter,
// or the breaker's cooldown when the breaker refused the call.
func (o *Orchestrator) backoff(ctx context.Context, r RetryPolicy, attempt int, refused bool) error {
	d := o.cfg.BreakerCooldown
	if !refused {
		ceiling := r.Initial << min(attempt-1, 20)
		if ceiling > r.Max || ceiling <= 0 {
			ceiling = r.Max
		}
		d = time.Duration(rand.Int64N(int64(ceiling)) + 1)
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func (o *Orchestrator) participant(name string) *participant {
	o.mu.Lock()
	defer o.mu.Unlock()
	p, ok := o.parts[name]
	if !ok {
		failures := o.cfg.BreakerFailures
		p = &participant{
			limit: make(chan struct{}, o.cfg.ParticipantConcurrency),
			cb: gobreaker.NewCircuitBreaker[json.RawMessage](gobreaker.Settings{
				Name: name, MaxRequests: 1, Timeout: o.cfg.BreakerCooldown,
				ReadyToTrip:  func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
				IsSuccessful: func(err error) bool { return err == nil || IsRejection(err) },
				OnStateChange: func(name string, from, to gobreaker.State) {
					o.cfg.Logger.Warn("saga: participant circuit breaker", "participant", name, "from", from.String(), "to", to.String())
				},
			}),
		}
		o.parts[name] = p
	}
	return p
}

// batchKey names a batched step: its definition, its index, and whether
// the calls are compensations.
type batchKey struct {
	def          defKey
	step         int
	compensation bool
}

// invoke calls step i of s's definition, its action or its compensation,
// alone or in a batch.
func (o *Orchestrator) invoke(ctx context.Context, s *Saga, def Definition, i int, compensation bool, attempt int) (json.RawMessage, error, bool) {
	step := def.Steps[i]
	fn, batch, key := step.Action, step.ActionBatch, ActionKey(s.ID, step.Name)
	if compensation {
		fn, batch, key = step.Compensate, step.CompensateBatch, CompensationKey(s.ID, step.Name)
	}
	if batch == nil {
		return o.call(ctx, s, step, fn, key, attempt)
	}
	k := batchKey{defKey{def.Name, def.Version}, i, compensation}
	part := o.participant(step.Participant)
	o.mu.Lock()
	b, ok := o.batchers[k]
	if !ok {
		base := o.ctx
		if base == nil { // driven without Start (RunOnce from a test)
			base = context.WithoutCancel(ctx)
		}
		b = &batcher{fn: batch, step: step, part: part, max: o.cfg.MaxBatch, base: base}
		o.batchers[k] = b
	}
	o.mu.Unlock()
	return b.do(ctx, Call{SagaID: s.ID, Step: step.Name, Key: key, Attempt: attempt, Input: s.Input, Outputs: outputs(s)})
}

// call calls fn for a step through the participant's concurrency limit
// and circuit breaker. refused reports that the breaker refused the call
// without making it.
func (o *Orchestrator) call(ctx context.Context, s *Saga, step Step, fn Func, key string, attempt int) (out json.RawMessage, err error, refused bool) {
	p := o.participant(step.Participant)
	select {
	case p.limit <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err(), false
	}
	defer func() { <-p.limit }()
	cctx, cancel := context.WithTimeout(ctx, step.Timeout)
	defer cancel()
	c := Call{SagaID: s.ID, Step: step.Name, Key: key, Attempt: attempt, Input: s.Input, Outputs: outputs(s)}
	out, err = p.cb.Execute(func() (res json.RawMessage, ferr error) {
		defer func() {
			if rec := recover(); rec != nil {
				ferr = fmt.Errorf("step %s panicked: %v", step.Name, rec)
			}
		}()
		return fn(cctx, c)
	})
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		p.count(err, true)
		return nil, fmt.Errorf("%s: circuit breaker open", step.Participant), true
	}
	p.count(err, false)
	return out, err, false
}
