// Package outboxbench measures the transactional outbox end to end: a
// business transaction that writes one row and one event, the relay
// publishing to JetStream, and a consumer applying the effect through the
// inbox in its own database. It reports throughput against the same
// writers with no outbox, commit-to-effect latency at a fixed offered
// load, and how fast a backlog of pending rows drains.
package outboxbench

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/inbox"
	"github.com/sysops-squad/sysops/internal/faultnet"
	"github.com/sysops-squad/sysops/lab/cpu"
	"github.com/sysops-squad/sysops/natsjs"
	"github.com/sysops-squad/sysops/outbox"
	"github.com/sysops-squad/sysops/sqldb"
)

// Config describes one run. Zero values mean the defaults.
type Config struct {
	// ProducerURL and ConsumerURL are two empty databases of one dialect.
	// Required.
	ProducerURL string
	ConsumerURL string
	// NATSURL is the broker. Required.
	NATSURL string
	// Writers is the number of concurrent business writers. Default 8.
	Writers int
	// Duration of the throughput phases. Default 5 s.
	Duration time.Duration
	// Rate and LatencyDuration set the latency phase: events per second
	// offered, for how long. Defaults 1000/s for 5 s.
	Rate            int
	LatencyDuration time.Duration
	// Backlog is the number of pending rows drained. Default 100,000.
	Backlog int
	// Outage is how long the broker is away in the outage phase, while
	// writers go on at Rate. Default 5 s.
	Outage time.Duration
	// Phases to run: any of "throughput", "latency", "drain", "outage".
	// Default all.
	Phases []string
}

func (c *Config) defaults() {
	c.Writers = cmp.Or(c.Writers, 8)
	c.Duration = cmp.Or(c.Duration, 5*time.Second)
	c.Rate = cmp.Or(c.Rate, 1000)
	c.LatencyDuration = cmp.Or(c.LatencyDuration, 5*time.Second)
	c.Backlog = cmp.Or(c.Backlog, 100_000)
	c.Outage = cmp.Or(c.Outage, 5*time.Second)
	if len(c.Phases) == 0 {
		c.Phases = slices.Clone(phases)
	}
}

// SettingError is a [Config] setting that cannot run.
type SettingError struct {
	Setting string // the Config field: Writers, Duration, Phases...
	Problem string
}

func (e *SettingError) Error() string { return "outboxbench: " + e.Setting + " " + e.Problem }

// Validate reports the first setting that cannot run, as a
// [*SettingError]. Zero values are fine: they take the defaults.
func (c Config) Validate() error {
	for _, f := range []struct {
		name string
		bad  bool
	}{
		{"Writers", c.Writers < 0},
		{"Duration", c.Duration < 0},
		{"Rate", c.Rate < 0},
		{"LatencyDuration", c.LatencyDuration < 0},
		{"Backlog", c.Backlog < 0},
		{"Outage", c.Outage < 0},
	} {
		if f.bad {
			return &SettingError{Setting: f.name, Problem: "must not be negative"}
		}
	}
	for _, p := range c.Phases {
		if !slices.Contains(phases, p) {
			return &SettingError{Setting: "Phases", Problem: fmt.Sprintf("has an unknown phase %q (%s)", p, strings.Join(phases, ", "))}
		}
	}
	return nil
}

// phases are the bench's phases, in the order they run by default.
var phases = []string{"throughput", "latency", "drain", "outage"}

// Report holds the measured figures.
type Report struct {
	Dialect  sqldb.Dialect
	Setup    string // what was measured, on what
	Baseline float64
	Writes   float64 // the writers with the outbox, no relay or consumer running
	EndToEnd float64
	Events   int // events in the end-to-end phase
	P50, P99 time.Duration
	Max      time.Duration
	Latency  int // events in the latency phase
	Drain    float64
	// The outage phase: the broker away for OutageFor while writers went
	// on; OutageWritten events committed meanwhile (of OutageEvents in the
	// phase), all applied OutageRecovery after the broker came back;
	// OutageMax is the longest commit-to-effect time; OutageDead the rows
	// dead at the end.
	OutageFor, OutageRecovery, OutageMax time.Duration
	OutageWritten, OutageEvents          int
	OutageDead                           int
	// The whole machine's CPU time (writers, relay, consumer, database
	// server, broker) per transaction or event of each throughput phase,
	// and its share of the cores; zero where the machine cannot be read.
	BaselineCPU, WritesCPU, EndToEndCPU    time.Duration
	BaselineBusy, WritesBusy, EndToEndBusy float64
}

// cpuNote is a phase's CPU figures as the report prints them.
func cpuNote(per time.Duration, busy float64) string {
	if busy <= 0 {
		return ""
	}
	return fmt.Sprintf("  cpu %.3fms each, machine %.0f%% busy", float64(per)/float64(time.Millisecond), 100*busy)
}

// Print writes the report as the bench's output.
func (r Report) Print(w io.Writer) {
	fmt.Fprintf(w, "%s\n", r.Setup)
	if r.Baseline > 0 {
		fmt.Fprintf(w, "  throughput, no outbox (business row only):      %9.0f tx/s%s\n", r.Baseline, cpuNote(r.BaselineCPU, r.BaselineBusy))
		fmt.Fprintf(w, "  throughput, outbox writes alone (no relay):     %9.0f tx/s      (%.0f%% of no-outbox: the writers' own ceiling)%s\n",
			r.Writes, 100*r.Writes/r.Baseline, cpuNote(r.WritesCPU, r.WritesBusy))
		fmt.Fprintf(w, "  throughput, end to end (commit -> effect):     %9.0f events/s  (%d events, %.0f%% of no-outbox)%s\n",
			r.EndToEnd, r.Events, 100*r.EndToEnd/r.Baseline, cpuNote(r.EndToEndCPU, r.EndToEndBusy))
	}
	if r.Latency > 0 {
		fmt.Fprintf(w, "  latency commit -> effect committed:            p50 %v  p99 %v  max %v  (%d events)\n",
			r.P50.Round(10*time.Microsecond), r.P99.Round(10*time.Microsecond), r.Max.Round(10*time.Microsecond), r.Latency)
	}
	if r.Drain > 0 {
		fmt.Fprintf(w, "  backlog drain (relay -> JetStream acked):      %9.0f events/s\n", r.Drain)
	}
	if r.OutageEvents > 0 {
		fmt.Fprintf(w, "  broker away for %v (writers on):              %d events committed meanwhile, no write failed; all applied %v after it came back;\n"+
			"                                                 commit -> effect max %v over %d events; %d rows dead\n",
			r.OutageFor, r.OutageWritten, r.OutageRecovery.Round(10*time.Millisecond), r.OutageMax.Round(10*time.Millisecond),
			r.OutageEvents, r.OutageDead)
	}
}

type bench struct {
	cfg      Config
	producer *sqldb.DB
	consumer *sqldb.DB
	broker   *natsjs.Broker
	seq      atomic.Int64

	mu        sync.Mutex
	committed map[string]time.Time // event id → business commit time (latency and outage phases)
	latencies []time.Duration
	appliedAt map[string]time.Time // event id → effect commit time, when tracked (outage phase)
	effects   atomic.Int64
}

const (
	stream    = "SYSOPS_BENCH"
	eventType = "sysops.bench.happened.v1"
	relayed   = "customer"  // the aggregate type of the events that are relayed and applied
	unrelayed = "unrelayed" // the aggregate type of the writes-alone phase's events
)

// Run runs the configured phases and returns the figures.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if err := cfg.Validate(); err != nil {
		return Report{}, err
	}
	cfg.defaults()
	b := &bench{cfg: cfg, committed: map[string]time.Time{}}
	var err error
	if b.producer, err = sqldb.Open(ctx, cfg.ProducerURL); err != nil {
		return Report{}, err
	}
	defer b.producer.Close()
	if b.consumer, err = sqldb.Open(ctx, cfg.ConsumerURL); err != nil {
		return Report{}, err
	}
	defer b.consumer.Close()
	if b.broker, err = natsjs.Connect(ctx, natsjs.Config{URL: cfg.NATSURL, Name: "outboxbench"}); err != nil {
		return Report{}, err
	}
	defer b.broker.Close()
	if err := b.setup(ctx); err != nil {
		return Report{}, err
	}
	rep := Report{Dialect: b.producer.Dialect(), Setup: b.describe(ctx)}
	for _, phase := range cfg.Phases {
		switch phase {
		case "throughput":
			var use cpu.Usage
			var n int
			if rep.Baseline, n, use, err = b.baseline(ctx); err != nil {
				return rep, err
			}
			rep.BaselineCPU, rep.BaselineBusy = use.Per(n), use.Share
			if rep.Writes, n, use, err = b.writesAlone(ctx); err != nil {
				return rep, err
			}
			rep.WritesCPU, rep.WritesBusy = use.Per(n), use.Share
			if rep.EndToEnd, rep.Events, use, err = b.endToEnd(ctx); err != nil {
				return rep, err
			}
			rep.EndToEndCPU, rep.EndToEndBusy = use.Per(rep.Events), use.Share
		case "latency":
			if err := b.latency(ctx, &rep); err != nil {
				return rep, err
			}
		case "drain":
			if rep.Drain, err = b.drain(ctx); err != nil {
				return rep, err
			}
		case "outage":
			if err := b.outage(ctx, &rep); err != nil {
				return rep, err
			}
		}
	}
	return rep, nil
}

func (b *bench) setup(ctx context.Context) error {
	// Fresh tables each run: a churned outbox carries dead tuples that
	// slow the next run until autovacuum catches up.
	for _, s := range []struct {
		db     *sqldb.DB
		tables []string
	}{
		{b.producer, []string{"outbox", "outbox_aggregate", "outbox_lease", outbox.MigrationSet + "_schema"}},
		{b.consumer, []string{"inbox", "inbox_aggregate", "inbox_parked", inbox.MigrationSet + "_schema"}},
	} {
		for _, t := range s.tables {
			if _, err := s.db.ExecContext(ctx, `DROP TABLE IF EXISTS `+t); err != nil {
				return fmt.Errorf("outboxbench: setup: %w", err)
			}
		}
	}
	if _, err := sqldb.Migrate(ctx, b.producer, outbox.MigrationSet, outbox.Migrations()); err != nil {
		return err
	}
	if _, err := sqldb.Migrate(ctx, b.consumer, inbox.MigrationSet, inbox.Migrations()); err != nil {
		return err
	}
	for _, s := range []struct {
		db  *sqldb.DB
		sql []string
	}{
		{b.producer, []string{`DROP TABLE IF EXISTS bench_order`, `CREATE TABLE bench_order (id TEXT PRIMARY KEY, customer TEXT NOT NULL, amount INTEGER NOT NULL)`}},
		{b.consumer, []string{`DROP TABLE IF EXISTS bench_effect`, `CREATE TABLE bench_effect (event_id TEXT PRIMARY KEY, customer TEXT NOT NULL)`}},
	} {
		for _, q := range s.sql {
			if _, err := s.db.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("outboxbench: setup: %w", err)
			}
		}
	}
	_ = b.broker.DeleteStream(ctx, stream)
	if err := b.broker.EnsureDeadLetterStream(ctx); err != nil {
		return err
	}
	return b.broker.EnsureStream(ctx, natsjs.StreamSpec{Name: stream, Subjects: []string{"sysops.bench.>"}})
}

func (b *bench) describe(ctx context.Context) string {
	durability := "synchronous=FULL (fsync on every commit)"
	if b.producer.Dialect() == sqldb.Postgres {
		var fsync, commit string
		_ = b.producer.QueryRowContext(ctx, `SHOW fsync`).Scan(&fsync)
		_ = b.producer.QueryRowContext(ctx, `SHOW synchronous_commit`).Scan(&commit)
		durability = fmt.Sprintf("fsync=%s synchronous_commit=%s", fsync, commit)
	}
	return fmt.Sprintf("outbox bench: %s (%s), producer and consumer in separate databases; JetStream at %s (file store, over TCP); "+
		"%d writers, %v per throughput phase, %d events/s for %v in the latency phase, %d-row backlog; each business "+
		"transaction = 1 row + 1 event; the consumer applies 1 row through the inbox, in batches",
		b.producer.Dialect(), durability, b.broker.ConnectedURL(), b.cfg.Writers, b.cfg.Duration, b.cfg.Rate,
		b.cfg.LatencyDuration, b.cfg.Backlog)
}

// order commits one business row and, unless aggType is empty, one event
// of an aggregate of that type.
func (b *bench) order(ctx context.Context, tx *sql.Tx, aggType string) (string, error) {
	n := b.seq.Add(1)
	id := fmt.Sprint("order-", n)
	customer := fmt.Sprint("cust-", n%1000)
	if _, err := tx.ExecContext(ctx, `INSERT INTO bench_order (id, customer, amount) VALUES ($1, $2, $3)`, id, customer, n%500); err != nil {
		return "", err
	}
	if aggType == "" {
		return id, nil
	}
	return id, outbox.Write(ctx, tx, sysops.Event{
		ID: id, Source: "/bench", Type: eventType, AggregateType: aggType, AggregateID: customer,
		Data: json.RawMessage(fmt.Sprintf(`{"order":%q,"amount":%d}`, id, n%500)),
	})
}

// writers runs cfg.Writers goroutines committing orders until ctx ends or
// (if pace > 0) at pace transactions per second in all, and returns how
// many committed.
func (b *bench) writers(ctx context.Context, aggType string, pace int, onCommit func(id string, at time.Time)) (int, error) {
	var count atomic.Int64
	var firstErr error
	var once sync.Once
	var tick <-chan time.Time
	if pace > 0 {
		t := time.NewTicker(time.Second / time.Duration(pace))
		defer t.Stop()
		tick = t.C
	}
	var wg sync.WaitGroup
	for range b.cfg.Writers {
		wg.Go(func() {
			for ctx.Err() == nil {
				if tick != nil {
					select {
					case <-tick:
					case <-ctx.Done():
						return
					}
				}
				// A transaction begun before the phase ends runs to its
				// end and counts: cut off at its COMMIT, it could commit
				// unseen, and leave a row the next phase does not expect.
				var id string
				tctx := context.WithoutCancel(ctx)
				err := sqldb.RunInTx(tctx, b.producer, func(tx *sql.Tx) error {
					var err error
					id, err = b.order(tctx, tx, aggType)
					return err
				})
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				if onCommit != nil {
					onCommit(id, time.Now())
				}
				count.Add(1)
			}
		})
	}
	wg.Wait()
	return int(count.Load()), firstErr
}

func (b *bench) baseline(ctx context.Context) (float64, int, cpu.Usage, error) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Duration)
	defer cancel()
	start, used := time.Now(), cpu.Read()
	n, err := b.writers(ctx, "", 0, nil)
	return float64(n) / time.Since(start).Seconds(), n, used.Since(), err
}

// writesAlone runs the writers with the outbox and nothing relaying it:
// what the outbox costs the writers themselves. Its events belong to
// aggregates of their own type, so that removing them afterwards leaves no
// gap in the numbers of the aggregates that are relayed.
func (b *bench) writesAlone(ctx context.Context) (float64, int, cpu.Usage, error) {
	wctx, cancel := context.WithTimeout(ctx, b.cfg.Duration)
	defer cancel()
	start, used := time.Now(), cpu.Read()
	n, err := b.writers(wctx, unrelayed, 0, nil)
	if err != nil {
		return 0, 0, cpu.Usage{}, err
	}
	rate, use := float64(n)/time.Since(start).Seconds(), used.Since()
	for _, q := range []string{`DELETE FROM outbox WHERE aggregate_type = $1`, `DELETE FROM outbox_aggregate WHERE aggregate_type = $1`} {
		if _, err := b.producer.ExecContext(ctx, q, unrelayed); err != nil {
			return 0, 0, cpu.Usage{}, fmt.Errorf("outboxbench: remove the unrelayed events: %w", err)
		}
	}
	if b.producer.Dialect() == sqldb.Postgres {
		// The deleted rows' index entries would slow the next phase's relay
		// until autovacuum came by.
		if _, err := b.producer.ExecContext(ctx, `VACUUM outbox`); err != nil {
			return 0, 0, cpu.Usage{}, fmt.Errorf("outboxbench: vacuum: %w", err)
		}
	}
	return rate, n, use, nil
}

// pipeline starts a relay and a consumer, which carries on where the
// previous phase's stopped (the same durable and inbox records); stop
// stops both.
func (b *bench) pipeline(ctx context.Context) (stop func(), err error) {
	return b.pipelineOn(ctx, b.broker)
}

// pipelineOn is pipeline with its relay and consumer on broker.
func (b *bench) pipelineOn(ctx context.Context, broker *natsjs.Broker) (stop func(), err error) {
	b.effects.Store(0)
	relay, err := outbox.NewRelay(b.producer, broker, outbox.RelayConfig{Retention: -1})
	if err != nil {
		return nil, err
	}
	if err := relay.Start(ctx); err != nil {
		return nil, err
	}
	c, err := inbox.NewConsumer(b.consumer, broker, inbox.Config{
		Name: "bench", Stream: stream, MaxBatch: 512,
		Handlers: map[string]inbox.ApplyFunc{eventType: b.apply},
	})
	if err != nil {
		relay.Stop()
		return nil, err
	}
	if err := c.Start(ctx); err != nil {
		relay.Stop()
		return nil, err
	}
	return func() { _ = c.Stop(); relay.Stop() }, nil
}

func (b *bench) apply(ctx context.Context, tx *sql.Tx, ev sysops.Event) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO bench_effect (event_id, customer) VALUES ($1, $2)`, ev.ID, ev.AggregateID); err != nil {
		return err
	}
	id := ev.ID
	sqldb.AfterCommit(tx, func(*sqldb.DB) {
		now := time.Now()
		b.effects.Add(1)
		b.mu.Lock()
		if t, ok := b.committed[id]; ok {
			b.latencies = append(b.latencies, now.Sub(t))
			delete(b.committed, id)
		}
		if b.appliedAt != nil {
			b.appliedAt[id] = now
		}
		b.mu.Unlock()
	})
	return nil
}

// waitEffects waits until n effects have committed.
func (b *bench) waitEffects(ctx context.Context, n int64) error {
	deadline := time.Now().Add(5*time.Minute + 20*b.cfg.Duration)
	for b.effects.Load() < n {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("outboxbench: only %d of %d effects committed", b.effects.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

func (b *bench) endToEnd(ctx context.Context) (float64, int, cpu.Usage, error) {
	stop, err := b.pipeline(ctx)
	if err != nil {
		return 0, 0, cpu.Usage{}, err
	}
	defer stop()
	wctx, cancel := context.WithTimeout(ctx, b.cfg.Duration)
	defer cancel()
	start, used := time.Now(), cpu.Read()
	n, err := b.writers(wctx, relayed, 0, nil)
	if err != nil {
		return 0, n, cpu.Usage{}, err
	}
	if err := b.waitEffects(ctx, int64(n)); err != nil {
		return 0, n, cpu.Usage{}, err
	}
	return float64(n) / time.Since(start).Seconds(), n, used.Since(), nil
}

func (b *bench) latency(ctx context.Context, rep *Report) error {
	stop, err := b.pipeline(ctx)
	if err != nil {
		return err
	}
	defer stop()
	b.mu.Lock()
	b.latencies = nil
	b.mu.Unlock()
	base := b.effects.Load()
	wctx, cancel := context.WithTimeout(ctx, b.cfg.LatencyDuration)
	defer cancel()
	n, err := b.writers(wctx, relayed, b.cfg.Rate, func(id string, at time.Time) {
		b.mu.Lock()
		b.committed[id] = at
		b.mu.Unlock()
	})
	if err != nil {
		return err
	}
	if err := b.waitEffects(ctx, base+int64(n)); err != nil {
		return err
	}
	b.mu.Lock()
	lat := slices.Clone(b.latencies)
	b.mu.Unlock()
	if len(lat) == 0 {
		return errors.New("outboxbench: no latencies measured")
	}
	slices.Sort(lat)
	rep.Latency = len(lat)
	rep.P50 = lat[len(lat)/2]
	rep.P99 = lat[min(len(lat)-1, len(lat)*99/100)]
	rep.Max = lat[len(lat)-1]
	return nil
}

// outage runs the relay and the consumer on a broker connection through a
// proxy (the other phases' connection stays direct), writers at Rate, and
// cuts the proxy for Outage a second into the phase: every connection to
// the broker reset, new ones refused, as when the broker goes away. The
// writers go on two seconds after it comes back; then every effect is
// waited for.
func (b *bench) outage(ctx context.Context, rep *Report) error {
	addr := strings.TrimPrefix(strings.Split(b.cfg.NATSURL, ",")[0], "nats://")
	proxy, err := faultnet.Listen(addr)
	if err != nil {
		return err
	}
	defer proxy.Close()
	broker, err := natsjs.Connect(ctx, natsjs.Config{URL: "nats://" + proxy.Addr(), Name: "outboxbench-outage"})
	if err != nil {
		return err
	}
	defer broker.Close()
	stop, err := b.pipelineOn(ctx, broker)
	if err != nil {
		return err
	}
	defer stop()
	b.mu.Lock()
	b.latencies, b.appliedAt = nil, map[string]time.Time{}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.appliedAt = nil
		b.mu.Unlock()
	}()

	var mu sync.Mutex
	var cutAt, backAt time.Time
	var during []string // events committed while the broker was away
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := b.writers(wctx, relayed, b.cfg.Rate, func(id string, at time.Time) {
			b.mu.Lock()
			b.committed[id] = at
			b.mu.Unlock()
			mu.Lock()
			if !cutAt.IsZero() && backAt.IsZero() {
				during = append(during, id)
			}
			mu.Unlock()
		})
		done <- result{n, err}
	}()
	sleep := func(d time.Duration) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	}
	if err := sleep(time.Second); err != nil {
		return err
	}
	mu.Lock()
	cutAt = time.Now()
	mu.Unlock()
	proxy.Cut()
	if err := sleep(b.cfg.Outage); err != nil {
		return err
	}
	if err := proxy.Restore(); err != nil {
		return err
	}
	mu.Lock()
	backAt = time.Now()
	mu.Unlock()
	if err := sleep(2 * time.Second); err != nil {
		return err
	}
	cancel()
	res := <-done
	if res.err != nil {
		return fmt.Errorf("outboxbench: a write failed with the broker away: %w", res.err)
	}
	if err := b.waitEffects(ctx, int64(res.n)); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	rep.OutageFor, rep.OutageEvents, rep.OutageWritten = b.cfg.Outage, res.n, len(during)
	for _, id := range during {
		if at, ok := b.appliedAt[id]; ok && at.Sub(backAt) > rep.OutageRecovery {
			rep.OutageRecovery = at.Sub(backAt)
		}
	}
	for _, l := range b.latencies {
		rep.OutageMax = max(rep.OutageMax, l)
	}
	return b.producer.QueryRowContext(ctx, `SELECT count(*) FROM outbox WHERE status = 'dead'`).Scan(&rep.OutageDead)
}

// drain fills the outbox with a backlog while no relay runs, then times
// one relay emptying it.
func (b *bench) drain(ctx context.Context) (float64, error) {
	const perTx = 1000
	// A relay stopped at the end of an earlier phase may have left rows
	// it published pending (their effects are in; the copies the drain
	// publishes again are dropped by the broker): count them as part of
	// the drain, so that it waits for every row.
	var leftover int
	if err := b.producer.QueryRowContext(ctx, `SELECT count(*) FROM outbox`).Scan(&leftover); err != nil {
		return 0, err
	}
	for written := 0; written < b.cfg.Backlog; written += perTx {
		err := sqldb.RunInTx(ctx, b.producer, func(tx *sql.Tx) error {
			evs := make([]sysops.Event, 0, perTx)
			for i := range min(perTx, b.cfg.Backlog-written) {
				n := written + i
				evs = append(evs, sysops.Event{Source: "/bench", Type: eventType, AggregateType: relayed,
					AggregateID: fmt.Sprint("drain-", n%1000), Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))})
			}
			return outbox.Write(ctx, tx, evs...)
		})
		if err != nil {
			return 0, fmt.Errorf("outboxbench: fill backlog: %w", err)
		}
	}
	// The relay runs as in a service (Start), woken by nothing but its
	// own rounds finding a full batch.
	pub := &countingPublisher{Publisher: b.broker}
	relay, err := outbox.NewRelay(b.producer, pub, outbox.RelayConfig{Retention: -1, BatchSize: 2000})
	if err != nil {
		return 0, err
	}
	defer relay.Stop()
	start := time.Now()
	if err := relay.Start(ctx); err != nil {
		return 0, err
	}
	deadline := start.Add(5 * time.Minute)
	for pub.acked.Load() < int64(b.cfg.Backlog+leftover) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return 0, fmt.Errorf("outboxbench: drained %d of %d rows", pub.acked.Load(), b.cfg.Backlog+leftover)
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	relay.Stop() // waits for the last round to be recorded
	var left int
	if err := b.producer.QueryRowContext(ctx, `SELECT count(*) FROM outbox`).Scan(&left); err != nil {
		return 0, err
	}
	if left != 0 {
		return 0, fmt.Errorf("outboxbench: %d rows left in the outbox after draining", left)
	}
	return float64(b.cfg.Backlog+leftover) / elapsed.Seconds(), nil
}

// countingPublisher counts the messages the broker acknowledged.
type countingPublisher struct {
	outbox.Publisher
	acked atomic.Int64
}

func (p *countingPublisher) PublishBatch(ctx context.Context, msgs []natsjs.Message) ([]natsjs.PubAck, []error) {
	acks, errs := p.Publisher.PublishBatch(ctx, msgs)
	for _, err := range errs {
		if err == nil {
			p.acked.Add(1)
		}
	}
	return acks, errs
}
