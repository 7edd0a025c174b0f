package inbox_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/inbox"
	"github.com/sysops-squad/sysops/natsjs"
	"github.com/sysops-squad/sysops/natsjs/brokertest"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

func newDB(t testing.TB, d sqldb.Dialect) *sqldb.DB {
	t.Helper()
	db := sqldbtest.Open(t, d)
	prepare(t, db)
	return db
}

// prepare runs the inbox migrations on db and creates the effect table.
func prepare(t testing.TB, db *sqldb.DB) {
	t.Helper()
	d := db.Dialect()
	ctx := context.Background()
	if _, err := sqldb.Migrate(ctx, db, inbox.MigrationSet, inbox.Migrations()); err != nil {
		t.Fatal(err)
	}
	key := "n INTEGER PRIMARY KEY" // SQLite numbers it
	if d == sqldb.Postgres {
		key = "n BIGSERIAL PRIMARY KEY"
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE effect (`+key+`, event_id TEXT NOT NULL, aggregate_id TEXT NOT NULL, seq INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
}

// record is the effect: one row per application, numbered in the order
// applied.
func record(ctx context.Context, tx *sql.Tx, ev sysops.Event) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO effect (event_id, aggregate_id, seq) VALUES ($1, $2, $3)`,
		ev.ID, ev.AggregateID, ev.Sequence)
	return err
}

func effects(t *testing.T, db *sqldb.DB) []string {
	t.Helper()
	q, err := db.QueryContext(context.Background(), `SELECT event_id FROM effect ORDER BY n`)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	var out []string
	for q.Next() {
		var id string
		if err := q.Scan(&id); err != nil {
			t.Fatal(err)
		}
		out = append(out, id)
	}
	return out
}

func ev(id, agg string, seq int64) sysops.Event {
	return sysops.Event{ID: id, Source: "/test", Type: "sysops.test.happened.v1", AggregateType: "thing", AggregateID: agg,
		Sequence: seq, Data: json.RawMessage(`{}`)}
}

func process(t *testing.T, db *sqldb.DB, e sysops.Event) inbox.Outcome {
	t.Helper()
	out, err := inbox.Process(context.Background(), db, "c1", e, record)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestProcessOnce(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := newDB(t, d)
		unordered := ev("u1", "", 0)
		for i, want := range []inbox.Outcome{inbox.Applied, inbox.Duplicate, inbox.Duplicate} {
			if got := process(t, db, unordered); got != want {
				t.Errorf("delivery %d of u1: %v, want %v", i+1, got, want)
			}
		}
		if got := process(t, db, ev("a1", "A", 1)); got != inbox.Applied {
			t.Errorf("a1: %v", got)
		}
		if got := process(t, db, ev("a1", "A", 1)); got != inbox.Duplicate {
			t.Errorf("a1 again: %v", got)
		}
		// Another consumer has its own records.
		if out, err := inbox.Process(context.Background(), db, "c2", unordered, record); err != nil || out != inbox.Applied {
			t.Errorf("u1 for c2: %v, %v", out, err)
		}
		if got := fmt.Sprint(effects(t, db)); got != "[u1 a1 u1]" {
			t.Errorf("effects = %s", got)
		}
	})
}

func TestProcessRollsBackWithTheHandler(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := newDB(t, d)
		boom := errors.New("boom")
		for _, e := range []sysops.Event{ev("u1", "", 0), ev("a1", "A", 1)} {
			_, err := inbox.Process(context.Background(), db, "c1", e, func(ctx context.Context, tx *sql.Tx, e sysops.Event) error {
				if err := record(ctx, tx, e); err != nil {
					return err
				}
				return boom
			})
			if !errors.Is(err, boom) {
				t.Fatalf("err = %v", err)
			}
			// Nothing was recorded: the next delivery applies it.
			if got := process(t, db, e); got != inbox.Applied {
				t.Errorf("%s after a failed attempt: %v, want applied", e.ID, got)
			}
		}
		if got := fmt.Sprint(effects(t, db)); got != "[u1 a1]" {
			t.Errorf("effects = %s", got)
		}
	})
}

func TestProcessParksEventsAheadOfTheirPredecessor(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := newDB(t, d)
		for _, tt := range []struct {
			e    sysops.Event
			want inbox.Outcome
		}{
			{ev("a3", "A", 3), inbox.Parked},
			{ev("a2", "A", 2), inbox.Parked},
			{ev("a3", "A", 3), inbox.Parked}, // duplicate while parked
			{ev("b1", "B", 1), inbox.Applied},
			{ev("a1", "A", 1), inbox.Applied}, // releases a2 and a3
			{ev("a2", "A", 2), inbox.Duplicate},
			{ev("a5", "A", 5), inbox.Parked},
		} {
			if got := process(t, db, tt.e); got != tt.want {
				t.Errorf("%s: %v, want %v", tt.e.ID, got, tt.want)
			}
		}
		if got := fmt.Sprint(effects(t, db)); got != "[b1 a1 a2 a3]" {
			t.Errorf("effects = %s, want a1, a2, a3 in order", got)
		}
		parked, err := inbox.ListParked(ctx, db, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(parked) != 1 || parked[0].Sequence != 5 || parked[0].Waiting != 4 {
			t.Errorf("parked = %+v, want a5 waiting for 4", parked)
		}
		process(t, db, ev("a4", "A", 4))
		if got := fmt.Sprint(effects(t, db)); got != "[b1 a1 a2 a3 a4 a5]" {
			t.Errorf("effects = %s", got)
		}
		nothingParked(t, db)
	})
}

// TestConcurrentInstancesKeepOrder: two consumer instances racing on the
// same aggregates still apply every event once, in order.
func TestConcurrentInstancesKeepOrder(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := newDB(t, d)
		const aggs, per = 10, 20
		var wg sync.WaitGroup
		for inst := range 2 {
			wg.Go(func() {
				for s := per; s >= 1; s-- { // instance 0 goes backwards, 1 forwards
					seq := int64(s)
					if inst == 1 {
						seq = int64(per + 1 - s)
					}
					for a := range aggs {
						e := ev(fmt.Sprintf("%d-%d", a, seq), fmt.Sprint("agg", a), seq)
						if _, err := inbox.Process(context.Background(), db, "c1", e, record); err != nil {
							t.Error(err)
							return
						}
					}
				}
			})
		}
		wg.Wait()
		q, err := db.QueryContext(context.Background(), `SELECT aggregate_id, seq FROM effect ORDER BY n`)
		if err != nil {
			t.Fatal(err)
		}
		defer q.Close()
		last := map[string]int64{}
		n := 0
		for q.Next() {
			var a string
			var s int64
			if err := q.Scan(&a, &s); err != nil {
				t.Fatal(err)
			}
			if s != last[a]+1 {
				t.Fatalf("%s: applied #%d after #%d", a, s, last[a])
			}
			last[a] = s
			n++
		}
		if n != aggs*per {
			t.Errorf("%d effects, want %d", n, aggs*per)
		}
	})
}

func TestPrune(t *testing.T) {
	db := newDB(t, sqldb.SQLite)
	process(t, db, ev("u1", "", 0))
	if n, err := inbox.Prune(context.Background(), db, "c1", time.Now().Add(time.Minute)); err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v", n, err)
	}
	if got := process(t, db, ev("u1", "", 0)); got != inbox.Applied {
		t.Errorf("after pruning, u1 is %v: its record is gone", got)
	}
}

// TestConsumer runs a consumer against a real JetStream server: bad input
// goes to the dead-letter stream with its reason, and every good event
// takes effect once, whatever is delivered twice.
func TestConsumer(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := newDB(t, d)
		b := brokertest.Connect(t, brokertest.RunServer(t))
		if err := b.EnsureStream(ctx, natsjs.ServiceStream("test")); err != nil {
			t.Fatal(err)
		}

		var mu sync.Mutex
		flaky := 0
		handler := func(ctx context.Context, tx *sql.Tx, e sysops.Event) error {
			switch e.ID {
			case "rejected":
				return inbox.Permanent(errors.New("priority must be low, medium, high or critical"))
			case "bad-data":
				// A value the database refuses (a whole number column): no
				// delivery can succeed.
				_, err := tx.ExecContext(ctx, `INSERT INTO effect (n, event_id, aggregate_id, seq) VALUES ($1, $2, '', 0)`, "seven", e.ID)
				return err
			case "flaky":
				mu.Lock()
				flaky++
				n := flaky
				mu.Unlock()
				if n < 3 {
					return errors.New("customer service unavailable")
				}
			}
			if err := record(ctx, tx, e); err != nil {
				return err
			}
			return nil
		}
		startConsumer(t, db, b, inbox.Config{
			Name: "effects", Stream: "SYSOPS_TEST",
			Handlers: map[string]inbox.ApplyFunc{"sysops.test.happened.v1": handler},
			Backoff:  func(int) time.Duration { return 10 * time.Millisecond },
		})

		publish := func(m natsjs.Message) {
			t.Helper()
			if _, err := b.Publish(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
		msg := func(e sysops.Event) natsjs.Message {
			t.Helper()
			m, err := natsjs.EventMessage(e)
			if err != nil {
				t.Fatal(err)
			}
			return m
		}
		for i := 1; i <= 5; i++ {
			publish(msg(ev(fmt.Sprint("a", i), "A", int64(i))))
		}
		again := msg(ev("a2", "A", 2))
		again.ID = "a2-published-twice" // past the broker's de-duplication
		publish(again)
		publish(msg(ev("flaky", "", 0)))
		publish(msg(ev("rejected", "", 0)))
		other := ev("other", "", 0)
		other.Type = "sysops.test.unexpected.v1"
		publish(natsjs.Message{ID: "other", Subject: "sysops.test.unexpected", Header: msg(other).Header, Data: other.Data})
		h := nats.Header{}
		h.Set("ce-specversion", "1.0")
		h.Set("ce-type", "sysops.test.happened.v1")
		publish(natsjs.Message{ID: "no-id", Subject: "sysops.test.happened", Header: h, Data: []byte(`{}`)})
		publish(natsjs.Message{ID: "garbage", Subject: "sysops.test.happened", Data: []byte(`{"x":`)})
		// An id PostgreSQL's text cannot hold: refused as an envelope, not
		// retried as a database error.
		nul := msg(ev("nul", "", 0))
		nul.ID = "nul-id"
		nul.Header.Set("ce-id", "nul\x00")
		publish(nul)
		publish(msg(ev("bad-data", "", 0)))

		// Wait on the committed effects, not on the handler being called: a
		// handler can run inside a batch transaction that is rolled back.
		deadline := time.Now().Add(20 * time.Second)
		for len(effects(t, db)) < 6 {
			if time.Now().After(deadline) {
				t.Fatalf("effects so far: %v", effects(t, db))
			}
			time.Sleep(10 * time.Millisecond)
		}
		dls := brokertest.WaitDeadLetters(t, b, 6)
		reasons := map[string]string{}
		for _, dl := range dls {
			reasons[dl.OriginalID] = dl.Reason
		}
		for id, want := range map[string]string{
			"rejected": "priority must be",
			"other":    `unknown event type "sysops.test.unexpected.v1"`,
			"no-id":    "malformed envelope",
			"garbage":  "malformed envelope",
			"nul-id":   "control character U+0000",
			"bad-data": "the database refused the event's data",
		} {
			if !strings.Contains(reasons[id], want) {
				t.Errorf("dead letter %s: reason %q, want it to mention %q", id, reasons[id], want)
			}
		}
		var as []string
		flakies := 0
		all := effects(t, db)
		for _, id := range all {
			if id == "flaky" {
				flakies++
			} else {
				as = append(as, id)
			}
		}
		if fmt.Sprint(as) != "[a1 a2 a3 a4 a5]" || flakies != 1 {
			t.Errorf("effects = %v, want a1..a5 once each, in order, and flaky once", all)
		}
	})
}

// startConsumer starts a consumer of b applying events to db, stopped
// when the test ends.
func startConsumer(t *testing.T, db *sqldb.DB, b inbox.Subscriber, cfg inbox.Config) *inbox.Consumer {
	t.Helper()
	c, err := inbox.NewConsumer(db, b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	return c
}

// TestConsumerWaitsOutADatabaseOutage: a consumer whose database cannot
// be reached holds the messages it has until the database is back, rather
// than fail their deliveries: an outage much longer than the redelivery
// budget dead-letters nothing, and afterwards every event takes effect
// once, in order. (The database is PostgreSQL behind a proxy that the test
// cuts: every connection reset, new ones refused.)
func TestConsumerWaitsOutADatabaseOutage(t *testing.T) {
	db, proxy := sqldbtest.OpenBehindProxy(t)
	prepare(t, db)
	waitOutOutage(t, db, proxy.Cut, func() {
		if err := proxy.Restore(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestConsumerWaitsOutADatabaseThatRefusesWrites: the same for a database
// that answers but refuses every write, as a PostgreSQL primary demoted
// in a failover or an SQLite file on a file system remounted read-only
// does. A ping cannot tell it from a healthy one; the error can.
func TestConsumerWaitsOutADatabaseThatRefusesWrites(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db, refuse := sqldbtest.OpenRefusing(t, d)
		prepare(t, db)
		waitOutOutage(t, db, func() { refuse(true) }, func() { refuse(false) })
	})
}

// waitOutOutage runs a consumer on db, applies an event, publishes three
// more while db is out (between begin and end), and checks that all four
// took effect, in order, with nothing dead-lettered.
func waitOutOutage(t *testing.T, db *sqldb.DB, begin, end func()) {
	t.Helper()
	ctx := context.Background()
	b := brokertest.Connect(t, brokertest.RunServer(t))
	if err := b.EnsureStream(ctx, natsjs.ServiceStream("test")); err != nil {
		t.Fatal(err)
	}
	startConsumer(t, db, b, inbox.Config{
		Name: "outage", Stream: "SYSOPS_TEST",
		Handlers:   map[string]inbox.ApplyFunc{"sysops.test.happened.v1": record},
		MaxDeliver: 2,
		AckWait:    time.Second, // shorter than the outage: the held messages are kept alive
		Backoff:    func(int) time.Duration { return 10 * time.Millisecond },
	})
	publish := func(e sysops.Event) {
		t.Helper()
		m, err := natsjs.EventMessage(e)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Publish(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	waitEffects := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			got := fmt.Sprint(effects(t, db))
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("effects = %s, want %s", got, want)
			}
		}
	}
	publish(ev("a1", "A", 1))
	waitEffects("[a1]")

	begin()
	for i := 2; i <= 4; i++ {
		publish(ev(fmt.Sprint("a", i), "A", int64(i)))
	}
	// The outage lasts 2 s: a hundred times what two deliveries 10 ms
	// apart take, and twice AckWait.
	time.Sleep(2 * time.Second)
	end()
	waitEffects("[a1 a2 a3 a4]")
	if dls, err := b.DeadLetters(ctx, 0, 10); err != nil || len(dls) != 0 {
		t.Errorf("dead letters after the outage: %d (%v), want none", len(dls), err)
		for _, dl := range dls {
			t.Logf("dead letter %s: %s", dl.OriginalID, dl.Reason)
		}
	}
}

// TestRedriveReleasesTheAggregate: an event its handler refuses goes to
// the dead-letter stream, and its aggregate's later events wait, parked,
// for it. Once the handler is fixed, redriving the dead letter applies it
// and releases what waited, in order.
func TestRedriveReleasesTheAggregate(t *testing.T) {
	ctx := context.Background()
	db := newDB(t, sqldb.SQLite)
	b := brokertest.Connect(t, brokertest.RunServer(t))
	if err := b.EnsureStream(ctx, natsjs.ServiceStream("test")); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	fixed := false
	startConsumer(t, db, b, inbox.Config{Name: "redrive", Stream: "SYSOPS_TEST",
		Handlers: map[string]inbox.ApplyFunc{"sysops.test.happened.v1": func(ctx context.Context, tx *sql.Tx, e sysops.Event) error {
			mu.Lock()
			defer mu.Unlock()
			if e.ID == "a2" && !fixed {
				return inbox.Permanent(errors.New("priority must be low, medium, high or critical"))
			}
			return record(ctx, tx, e)
		}}})
	for i := 1; i <= 3; i++ {
		m, err := natsjs.EventMessage(ev(fmt.Sprint("a", i), "A", int64(i)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Publish(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	dl := brokertest.WaitDeadLetters(t, b, 1)[0]
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		parked, err := inbox.ListParked(ctx, db, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(parked) == 1 && parked[0].Waiting == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("parked = %+v, want a3 waiting for #2", parked)
		}
	}
	if got := fmt.Sprint(effects(t, db)); got != "[a1]" {
		t.Fatalf("effects = %s, want [a1] while a2 is dead-lettered", got)
	}
	mu.Lock()
	fixed = true
	mu.Unlock()
	if _, err := b.Redrive(ctx, dl.DLQSequence); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got := fmt.Sprint(effects(t, db))
		if got == "[a1 a2 a3]" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("effects after the redrive = %s, want [a1 a2 a3]", got)
		}
	}
	nothingParked(t, db)
}

// TestHandlerPanicIsolated: a handler that panics on one event of a batch
// costs only that event, dead-lettered with the panic as its reason; the
// events batched with it take effect once, and nothing crashes.
func TestHandlerPanicIsolated(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := newDB(t, d)
		c, err := inbox.NewConsumer(db, nil, inbox.Config{Name: "panics", Stream: "SYSOPS_TEST",
			Handlers: map[string]inbox.ApplyFunc{"sysops.test.happened.v1": func(ctx context.Context, tx *sql.Tx, e sysops.Event) error {
				if e.ID == "boom" {
					var m map[string]int
					m["boom"]++ // a nil map: the handler's own bug
				}
				return record(ctx, tx, e)
			}}})
		if err != nil {
			t.Fatal(err)
		}
		var ds []*natsjs.Delivery
		for _, e := range []sysops.Event{ev("a1", "A", 1), ev("boom", "B", 1), ev("c1", "C", 1)} {
			m, err := natsjs.EventMessage(e)
			if err != nil {
				t.Fatal(err)
			}
			ds = append(ds, &natsjs.Delivery{Message: m, NumDelivered: 1})
		}
		results := c.HandleBatch(context.Background(), ds)
		if results[0] != nil || results[2] != nil {
			t.Errorf("results = %v, want a1 and c1 applied", results)
		}
		if !natsjs.IsPermanent(results[1]) || !strings.Contains(fmt.Sprint(results[1]), "panic") {
			t.Errorf("boom: %v, want a permanent error naming the panic", results[1])
		}
		if got := fmt.Sprint(effects(t, db)); got != "[a1 c1]" {
			t.Errorf("effects = %s, want [a1 c1]", got)
		}
	})
}

// TestHandleBatch runs one batch that mixes the cases the batch path
// records in one statement (runs of consecutive events that continue or
// start their aggregate) with those it leaves to the per-event path
// (duplicates, gaps, parked predecessors, out-of-order runs, events without
// a sequence), then delivers the whole batch again.
func TestHandleBatch(t *testing.T) {
	// The batch holds more sequenced events than the smallest batch the
	// one-statement path takes (32), so on PostgreSQL both paths run.
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := newDB(t, d)
		// Before the batch: B is at 1, C at 2, D has 2 parked behind 1.
		for _, e := range []sysops.Event{ev("b1", "B", 1), ev("c1", "C", 1), ev("c2", "C", 2), ev("d2", "D", 2)} {
			if _, err := inbox.Process(ctx, db, "batch", e, record); err != nil {
				t.Fatal(err)
			}
		}
		before := len(effects(t, db))
		c, err := inbox.NewConsumer(db, nil, inbox.Config{Name: "batch", Stream: "SYSOPS_TEST",
			Handlers: map[string]inbox.ApplyFunc{"sysops.test.happened.v1": record}})
		if err != nil {
			t.Fatal(err)
		}
		batch := []sysops.Event{
			ev("a1", "A", 1), ev("n", "A", 0), ev("a2", "A", 2), ev("b2", "B", 2), ev("a3", "A", 3), ev("b3", "B", 3),
			ev("c2-again", "C", 2), ev("d1", "D", 1), ev("e2", "E", 2), ev("e1", "E", 1), ev("f5", "F", 5),
		}
		var gs []string
		for i := int64(1); i <= 24; i++ {
			batch = append(batch, ev(fmt.Sprint("g", i), "G", i))
			gs = append(gs, fmt.Sprint("g", i))
		}
		deliver := func() {
			t.Helper()
			ds := make([]*natsjs.Delivery, len(batch))
			for i, e := range batch {
				m, err := natsjs.EventMessage(e)
				if err != nil {
					t.Fatal(err)
				}
				ds[i] = &natsjs.Delivery{Message: m, Stream: "SYSOPS_TEST", Sequence: uint64(i + 1), NumDelivered: 1}
			}
			for i, err := range c.HandleBatch(ctx, ds) {
				if err != nil {
					t.Fatalf("delivery %s: %v", batch[i].ID, err)
				}
			}
		}
		deliver()
		got := effects(t, db)[before:]
		// c2 a duplicate; f5 waits for f1..f4
		want := "[a1 n a2 b2 a3 b3 d1 d2 e1 e2 " + strings.Join(gs, " ") + "]"
		if fmt.Sprint(got) != want {
			t.Fatalf("effects of the batch = %v, want %s", got, want)
		}
		deliver()
		if again := effects(t, db)[before+len(got):]; len(again) != 0 {
			t.Errorf("the same batch again applied %v, want nothing", again)
		}
		for _, e := range []sysops.Event{ev("d3", "D", 3), ev("a4", "A", 4)} {
			if _, err := inbox.Process(ctx, db, "batch", e, record); err != nil {
				t.Fatal(err)
			}
		}
		if got, want := fmt.Sprint(effects(t, db)[before+len(got):]), "[d3 a4]"; got != want {
			t.Errorf("after the batch: effects %s, want %s (positions kept by the batch)", got, want)
		}
	})
}

// TestParkedEventsUseTheirOwnHandler: an event parked behind its
// predecessor is applied, when the predecessor arrives, by the handler of
// its own type — not by the predecessor's.
func TestParkedEventsUseTheirOwnHandler(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := newDB(t, d)
		by := func(tag string) inbox.ApplyFunc {
			return func(ctx context.Context, tx *sql.Tx, e sysops.Event) error {
				e.ID = tag + ":" + e.ID
				return record(ctx, tx, e)
			}
		}
		c, err := inbox.NewConsumer(db, nil, inbox.Config{Name: "types", Stream: "SYSOPS_TEST",
			Handlers: map[string]inbox.ApplyFunc{"sysops.test.opened.v1": by("opened"), "sysops.test.closed.v1": by("closed")}})
		if err != nil {
			t.Fatal(err)
		}
		opened, closed := ev("x1", "X", 1), ev("x2", "X", 2)
		opened.Type, closed.Type = "sysops.test.opened.v1", "sysops.test.closed.v1"
		deliverTo(t, c, closed) // ahead of its predecessor: parked
		deliverTo(t, c, opened) // applied, and releases x2
		if got := fmt.Sprint(effects(t, db)); got != "[opened:x1 closed:x2]" {
			t.Errorf("effects = %s, want [opened:x1 closed:x2]", got)
		}
	})
}

func nothingParked(t *testing.T, db *sqldb.DB) {
	t.Helper()
	if parked, err := inbox.ListParked(context.Background(), db, 10); err != nil || len(parked) != 0 {
		t.Errorf("still parked: %+v, %v", parked, err)
	}
}

func deliverTo(t *testing.T, c *inbox.Consumer, evs ...sysops.Event) {
	t.Helper()
	for _, e := range evs {
		m, err := natsjs.EventMessage(e)
		if err != nil {
			t.Fatal(err)
		}
		if errs := c.HandleBatch(context.Background(), []*natsjs.Delivery{{Message: m, Stream: "SYSOPS_TEST", Sequence: 1,
			NumDelivered: 1}}); errs[0] != nil {
			t.Fatal(errs[0])
		}
	}
}

// TestSkipGap: events parked behind one that never comes are applied
// once the consumer is told to give up on it; the skipped event is a
// duplicate if it turns up after all.
func TestSkipGap(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := newDB(t, d)
		c, err := inbox.NewConsumer(db, nil, inbox.Config{Name: "gaps", Stream: "SYSOPS_TEST",
			Handlers: map[string]inbox.ApplyFunc{"sysops.test.happened.v1": record}})
		if err != nil {
			t.Fatal(err)
		}
		deliverTo(t, c, ev("x1", "X", 1), ev("x3", "X", 3), ev("x4", "X", 4), ev("x6", "X", 6))
		if got := fmt.Sprint(effects(t, db)); got != "[x1]" {
			t.Fatalf("effects = %s, want [x1] (x3 and later parked behind the missing x2)", got)
		}
		g, err := c.SkipGap(ctx, "thing", "X")
		if err != nil {
			t.Fatal(err)
		}
		if g.From != 2 || g.To != 2 || g.Applied != 2 {
			t.Errorf("gap = %+v, want 2..2 skipped and 2 applied", g)
		}
		deliverTo(t, c, ev("x2", "X", 2)) // too late: a duplicate now
		if got := fmt.Sprint(effects(t, db)); got != "[x1 x3 x4]" {
			t.Errorf("effects = %s, want [x1 x3 x4]", got)
		}
		if g, err := c.SkipGap(ctx, "thing", "X"); err != nil || g.From != 5 || g.To != 5 || g.Applied != 1 {
			t.Errorf("second skip = %+v, %v; want 5..5 skipped and x6 applied", g, err)
		}
		if _, err := c.SkipGap(ctx, "thing", "X"); !errors.Is(err, inbox.ErrNothingParked) {
			t.Errorf("skip with nothing parked = %v", err)
		}
		deliverTo(t, c, ev("x7", "X", 7))
		if got := fmt.Sprint(effects(t, db)); got != "[x1 x3 x4 x6 x7]" {
			t.Errorf("effects = %s, want [x1 x3 x4 x6 x7]", got)
		}
		nothingParked(t, db)
	})
}

// TestGapTimeout: with Config.GapTimeout the running consumer gives up on
// its own; an aggregate whose events are parked for less long waits.
func TestGapTimeout(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := newDB(t, d)
		b := brokertest.Connect(t, brokertest.RunServer(t))
		if err := b.EnsureStream(ctx, natsjs.ServiceStream("test")); err != nil {
			t.Fatal(err)
		}
		c, err := inbox.NewConsumer(db, b, inbox.Config{Name: "timeout", Stream: natsjs.ServiceStream("test").Name,
			GapTimeout: 200 * time.Millisecond, Handlers: map[string]inbox.ApplyFunc{"sysops.test.happened.v1": record}})
		if err != nil {
			t.Fatal(err)
		}
		deliverTo(t, c, ev("y2", "Y", 2), ev("y3", "Y", 3))
		if n, err := c.SkipStaleGaps(ctx, time.Now().Add(-time.Hour)); err != nil || len(n) != 0 {
			t.Fatalf("gaps parked for less than an hour skipped: %v, %v", n, err)
		}
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer c.Stop()
		for i := 0; fmt.Sprint(effects(t, db)) != "[y2 y3]"; i++ {
			if i == 500 {
				t.Fatalf("effects = %v after 10 s, want [y2 y3] once the gap timed out", effects(t, db))
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}
