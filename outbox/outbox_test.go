package outbox_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/natsjs"
	"github.com/sysops-squad/sysops/natsjs/brokertest"
	"github.com/sysops-squad/sysops/outbox"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

// publisherFuncs is a hand-written fake Publisher.
type publisherFuncs struct {
	PublishBatchFunc func(ctx context.Context, msgs []natsjs.Message) ([]natsjs.PubAck, []error)
}

func (p publisherFuncs) PublishBatch(ctx context.Context, msgs []natsjs.Message) ([]natsjs.PubAck, []error) {
	return p.PublishBatchFunc(ctx, msgs)
}

var _ outbox.Publisher = publisherFuncs{}

// recorder is a Publisher that records what it publishes and can be told
// to fail some events.
type recorder struct {
	mu        sync.Mutex
	published []natsjs.Message
	fail      func(m natsjs.Message) error
	calls     int
}

func (r *recorder) PublishBatch(_ context.Context, msgs []natsjs.Message) ([]natsjs.PubAck, []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	errs := make([]error, len(msgs))
	for i, m := range msgs {
		if r.fail != nil {
			if errs[i] = r.fail(m); errs[i] != nil {
				continue
			}
		}
		r.published = append(r.published, m)
	}
	return make([]natsjs.PubAck, len(msgs)), errs
}

func (r *recorder) ids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, m := range r.published {
		out = append(out, m.ID)
	}
	return out
}

func newDB(t *testing.T, d sqldb.Dialect) *sqldb.DB {
	t.Helper()
	db := sqldbtest.Open(t, d)
	prepare(t, db)
	return db
}

// prepare runs the outbox migrations on db and creates the business table.
func prepare(t *testing.T, db *sqldb.DB) {
	t.Helper()
	if _, err := sqldb.Migrate(context.Background(), db, outbox.MigrationSet, outbox.Migrations()); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(context.Background(), `CREATE TABLE item (id TEXT PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
}

func event(id, agg string) sysops.Event {
	return sysops.Event{
		ID: id, Source: "/test", Type: "sysops.test.happened.v1",
		AggregateType: "thing", AggregateID: agg,
		Data: json.RawMessage(fmt.Sprintf(`{"id":%q}`, id)),
	}
}

// write commits one business row and its event.
func write(t *testing.T, db *sqldb.DB, evs ...sysops.Event) {
	t.Helper()
	err := sqldb.RunInTx(context.Background(), db, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(context.Background(), `INSERT INTO item (id) VALUES ($1)`, evs[0].ID); err != nil {
			return err
		}
		return outbox.Write(context.Background(), tx, evs...)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func statusCount(t *testing.T, db *sqldb.DB, status outbox.Status) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(context.Background(), `SELECT count(*) FROM outbox WHERE status = $1`, string(status)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func newRelay(t *testing.T, db *sqldb.DB, pub outbox.Publisher, cfg outbox.RelayConfig) *outbox.Relay {
	t.Helper()
	r, err := outbox.NewRelay(db, pub, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	return r
}

func runOnce(t *testing.T, r *outbox.Relay) outbox.Round {
	t.Helper()
	res, err := r.RunOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestWriteCommitsWithTheTransaction(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := newDB(t, d)
		write(t, db, event("e1", "A"), event("e2", "A"))
		write(t, db, event("e3", "B"))
		write(t, db, event("e4", "A"))

		boom := errors.New("business rule failed")
		err := sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
			if err := outbox.Write(ctx, tx, event("rolled-back", "A")); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatal(err)
		}

		rows, err := outbox.List(ctx, db, outbox.ListOptions{Status: outbox.StatusPending})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range rows {
			got = append(got, fmt.Sprintf("%s:%s#%d", r.EventID, r.AggregateID, r.AggregateSeq))
		}
		want := "[e1:A#1 e2:A#2 e3:B#1 e4:A#3]"
		if fmt.Sprint(got) != want {
			t.Errorf("pending rows = %v, want %s (the rolled-back event absent, sequences per aggregate)", got, want)
		}
		if rows[0].Subject != "sysops.test.happened" || rows[0].EventType != "sysops.test.happened.v1" {
			t.Errorf("row = %+v", rows[0])
		}
	})
}

// TestWriteDuplicateIDFailsTheTransaction: an event id already in the
// outbox fails the whole transaction, business row included; on
// PostgreSQL the insert travels with the COMMIT, so that is where it
// fails, and the numbering it took is rolled back with it.
func TestWriteDuplicateIDFailsTheTransaction(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := newDB(t, d)
		write(t, db, event("e1", "A"))
		err := sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO item (id) VALUES ('second')`); err != nil {
				return err
			}
			return outbox.Write(ctx, tx, event("e1", "A"))
		})
		if !sqldb.IsUniqueViolation(err) {
			t.Fatalf("err = %v, want a unique violation", err)
		}
		var items int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM item`).Scan(&items); err != nil || items != 1 {
			t.Errorf("items = %d, %v; want only the first transaction's", items, err)
		}
		write(t, db, event("e2", "A"))
		rows, err := outbox.List(ctx, db, outbox.ListOptions{Status: outbox.StatusPending})
		if err != nil || len(rows) != 2 || rows[1].AggregateSeq != 2 {
			t.Errorf("rows = %+v, %v; want e2 numbered 2", rows, err)
		}
	})
}

func TestWriteRejects(t *testing.T) {
	db := newDB(t, sqldb.SQLite)
	ctx := context.Background()
	noAgg := event("x", "A")
	noAgg.AggregateID = ""
	withSeq := event("y", "A")
	withSeq.Sequence = 4
	badType := event("z", "A")
	badType.Type = "created"
	for name, tt := range map[string]struct {
		ev   sysops.Event
		want error
	}{
		"no aggregate": {noAgg, outbox.ErrNoAggregate},
		"sequence set": {withSeq, outbox.ErrSequenceSet},
		"bad type":     {badType, nil},
	} {
		t.Run(name, func(t *testing.T) {
			err := sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error { return outbox.Write(ctx, tx, tt.ev) })
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestWriteFillsIDAndTime(t *testing.T) {
	db := newDB(t, sqldb.SQLite)
	write(t, db, sysops.Event{Source: "/t", Type: "sysops.test.happened.v1", AggregateType: "thing", AggregateID: "A"})
	rows, err := outbox.List(context.Background(), db, outbox.ListOptions{Status: outbox.StatusPending})
	if err != nil || len(rows) != 1 {
		t.Fatalf("rows = %v, %v", rows, err)
	}
	if len(rows[0].EventID) != 36 {
		t.Errorf("generated id %q is not a UUID", rows[0].EventID)
	}
}

func TestRelayPublishesInOrderAndMarksSent(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := newDB(t, d)
		for i := range 30 {
			write(t, db, event(fmt.Sprint("e", i), fmt.Sprint("agg", i%3)))
		}
		pub := &recorder{}
		r := newRelay(t, db, pub, outbox.RelayConfig{Retention: time.Hour})
		res := runOnce(t, r)
		if !res.Leader || res.Read != 30 || res.Published != 30 {
			t.Fatalf("round = %+v, want 30 read and published", res)
		}
		if n := statusCount(t, db, outbox.StatusSent); n != 30 {
			t.Errorf("%d rows sent, want 30", n)
		}
		last := map[string]int{}
		for _, m := range pub.published {
			ev, err := natsjs.ParseEvent(m)
			if err != nil {
				t.Fatalf("published message is not a CloudEvent: %v", err)
			}
			if m.ID != ev.ID {
				t.Errorf("message id %q != event id %q", m.ID, ev.ID)
			}
			if int(ev.Sequence) != last[ev.AggregateID]+1 {
				t.Errorf("%s #%d published after #%d", ev.AggregateID, ev.Sequence, last[ev.AggregateID])
			}
			last[ev.AggregateID] = int(ev.Sequence)
		}
		if res := runOnce(t, r); res.Read != 0 {
			t.Errorf("second round read %d rows, want 0", res.Read)
		}
	})
}

func TestRelayHoldsBackAnAggregateBehindAFailure(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := newDB(t, d)
		write(t, db, event("a1", "A"))
		write(t, db, event("b1", "B"))
		write(t, db, event("a2", "A"))
		write(t, db, event("b2", "B"))
		brokerDown := true
		pub := &recorder{fail: func(m natsjs.Message) error {
			if m.ID == "a1" && brokerDown {
				return errors.New("nats: timeout")
			}
			return nil
		}}
		r := newRelay(t, db, pub, outbox.RelayConfig{Backoff: func(int) time.Duration { return 0 }})
		res := runOnce(t, r)
		if res.Published != 2 || res.Failed != 1 {
			t.Fatalf("round = %+v, want B's two published and a1 failed", res)
		}
		if got := fmt.Sprint(pub.ids()); got != "[b1 b2]" {
			t.Errorf("published %s, want [b1 b2]: a2 must wait for a1", got)
		}
		rows, _ := outbox.List(ctx, db, outbox.ListOptions{Status: outbox.StatusPending})
		if len(rows) != 2 || rows[0].Attempts != 1 || rows[0].LastError != "nats: timeout" {
			t.Errorf("pending = %+v, want a1 with one attempt and its error, and a2", rows)
		}
		brokerDown = false
		runOnce(t, r)
		if got := fmt.Sprint(pub.ids()); got != "[b1 b2 a1 a2]" {
			t.Errorf("published %s, want a1 then a2 after the broker recovered", got)
		}
	})
}

func TestRelayDeadRowsAndOperatorActions(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := newDB(t, d)
		write(t, db, event("a1", "A"))
		write(t, db, event("a2", "A"))
		poisoned := true
		pub := &recorder{fail: func(m natsjs.Message) error {
			if m.ID == "a1" && poisoned {
				return errors.New("maximum payload exceeded")
			}
			return nil
		}}
		r := newRelay(t, db, pub, outbox.RelayConfig{MaxAttempts: 3, Backoff: func(int) time.Duration { return 0 }})
		for range 3 {
			runOnce(t, r)
		}
		dead, err := outbox.List(ctx, db, outbox.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(dead) != 1 || dead[0].EventID != "a1" || dead[0].Attempts != 3 || dead[0].LastError != "maximum payload exceeded" {
			t.Fatalf("dead rows = %+v, want a1 after 3 attempts with its error", dead)
		}
		runOnce(t, r)
		if len(pub.ids()) != 0 {
			t.Errorf("published %v while a1 is dead; a2 must wait", pub.ids())
		}
		stats, err := outbox.GetStats(ctx, db)
		if err != nil || stats.Dead != 1 || stats.Pending != 1 {
			t.Errorf("stats = %+v, %v", stats, err)
		}

		poisoned = false
		// No seqs name no rows: an empty selection is never all of them.
		if n, err := outbox.Retry(ctx, db); err != nil || n != 0 {
			t.Fatalf("Retry of no seqs = %d, %v; want 0", n, err)
		}
		if n, err := outbox.RetryAll(ctx, db); err != nil || n != 1 {
			t.Fatalf("RetryAll = %d, %v", n, err)
		}
		runOnce(t, r)
		if got := fmt.Sprint(pub.ids()); got != "[a1 a2]" {
			t.Errorf("after retry published %s, want [a1 a2]", got)
		}

		// Purge drops a dead row for good and releases its successors.
		write(t, db, event("c1", "C"))
		write(t, db, event("c2", "C"))
		pub.fail = func(m natsjs.Message) error {
			if m.ID == "c1" {
				return errors.New("rejected")
			}
			return nil
		}
		for range 3 {
			runOnce(t, r)
		}
		if n, err := outbox.Purge(ctx, db); err != nil || n != 0 {
			t.Fatalf("Purge of no seqs = %d, %v; want 0", n, err)
		}
		dead, err = outbox.List(ctx, db, outbox.ListOptions{})
		if err != nil || len(dead) != 1 {
			t.Fatalf("dead rows = %+v, %v; want c1", dead, err)
		}
		if n, err := outbox.Purge(ctx, db, dead[0].Seq, dead[0].Seq+1000); err != nil || n != 1 {
			t.Fatalf("Purge of c1 = %d, %v", n, err)
		}
		runOnce(t, r)
		if got := fmt.Sprint(pub.ids()); got != "[a1 a2 c2]" {
			t.Errorf("after purge published %s, want c2 released", got)
		}
		// c1's number stays taken: it may have reached the broker.
		if ev, _ := natsjs.ParseEvent(pub.published[len(pub.published)-1]); ev.Sequence != 2 {
			t.Errorf("c2 published as #%d, want #2 (after the purged c1)", ev.Sequence)
		}
	})
}

func TestStoppedRoundCountsNoAttempt(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := newDB(t, d)
		write(t, db, event("s1", "S"))
		roundCtx, stop := context.WithCancel(ctx)
		// The broker never answers; the relay is stopped while it waits.
		hung := publisherFuncs{func(ctx context.Context, msgs []natsjs.Message) ([]natsjs.PubAck, []error) {
			stop()
			<-ctx.Done()
			errs := make([]error, len(msgs))
			for i := range errs {
				errs[i] = ctx.Err()
			}
			return make([]natsjs.PubAck, len(msgs)), errs
		}}
		r := newRelay(t, db, hung, outbox.RelayConfig{MaxAttempts: 1, Backoff: func(int) time.Duration { return time.Hour }})
		res, err := r.RunOnce(roundCtx)
		if err != nil {
			t.Fatal(err)
		}
		if res.Interrupted != 1 || res.Failed != 0 || res.Dead != 0 {
			t.Fatalf("round = %+v, want the row interrupted, not failed", res)
		}
		rows, err := outbox.List(ctx, db, outbox.ListOptions{Status: outbox.StatusPending})
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 1 || rows[0].Attempts != 0 || rows[0].LastError != "" {
			t.Fatalf("pending rows = %+v, want s1 with no attempt counted", rows)
		}
		// No backoff either: the next relay publishes it at once.
		pub := &recorder{}
		next := newRelay(t, db, pub, outbox.RelayConfig{})
		r.Stop()
		runOnce(t, next)
		if got := fmt.Sprint(pub.ids()); got != "[s1]" {
			t.Errorf("next relay published %s, want [s1]", got)
		}
	})
}

func TestRelayRetention(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := newDB(t, d)
		write(t, db, event("e1", "A"))
		r := newRelay(t, db, &recorder{}, outbox.RelayConfig{Retention: time.Nanosecond})
		runOnce(t, r)
		if n, err := r.DeleteSent(context.Background()); err != nil || n != 1 {
			t.Errorf("DeleteSent = %d, %v; want 1", n, err)
		}
		r.Stop()
		// A row kept by a relay with retention, then one relayed by
		// default: the default keeps nothing, and cleans up the other.
		write(t, db, event("e2", "A"))
		r = newRelay(t, db, &recorder{}, outbox.RelayConfig{Retention: time.Hour})
		runOnce(t, r)
		r.Stop()
		write(t, db, event("e3", "A"))
		r = newRelay(t, db, &recorder{}, outbox.RelayConfig{})
		if res := runOnce(t, r); res.Published != 1 {
			t.Fatalf("round = %+v, want e3 published", res)
		}
		if n := statusCount(t, db, outbox.StatusSent); n != 1 {
			t.Errorf("%d sent rows after the default relay's round, want only e2's", n)
		}
		if n, err := r.DeleteSent(context.Background()); err != nil || n != 1 {
			t.Errorf("DeleteSent without retention = %d, %v; want e2's row", n, err)
		}
		var n int
		if err := db.QueryRowContext(context.Background(), `SELECT count(*) FROM outbox`).Scan(&n); err != nil || n != 0 {
			t.Errorf("%d rows left without retention, want 0", n)
		}
	})
}

// writeAndHold writes ev in a transaction that stays open until release
// is called (at the latest when the test ends); done then reports how the
// transaction ended. The transaction is not run by RunInTx, so Write's
// statements run at once rather than with the COMMIT: the event is
// numbered and placed, and its aggregate locked, while the transaction is
// held open.
func writeAndHold(t *testing.T, db *sqldb.DB, ev sysops.Event) (release func(), done <-chan error) {
	t.Helper()
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := outbox.Write(ctx, tx, ev); err != nil {
		_ = tx.Rollback()
		t.Fatal(err)
	}
	hold, result := make(chan struct{}), make(chan error, 1)
	var once sync.Once
	release = func() { once.Do(func() { close(hold) }) }
	t.Cleanup(release)
	go func() {
		<-hold
		result <- tx.Commit()
	}()
	return release, result
}

// TestRelayGapSafety interleaves transactions so that an event with a
// lower outbox position commits after one with a higher position. Neither
// may be skipped. (On SQLite writers are serialized, so the interleaving
// collapses; the test still must pass.)
func TestRelayGapSafety(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := newDB(t, d)
		pub := &recorder{}
		r := newRelay(t, db, pub, outbox.RelayConfig{})

		release, slowDone := writeAndHold(t, db, event("slow", "S"))
		fastDone := make(chan struct{})
		go func() {
			defer close(fastDone)
			write(t, db, event("fast", "F"))
		}()
		if d == sqldb.Postgres {
			<-fastDone // committed while "slow" (lower seq) is still open
			runOnce(t, r)
			if got := fmt.Sprint(pub.ids()); got != "[fast]" {
				t.Fatalf("published %s, want [fast] while slow is uncommitted", got)
			}
		}
		release()
		if err := <-slowDone; err != nil {
			t.Fatal(err)
		}
		<-fastDone
		runOnce(t, r)
		ids := pub.ids()
		if len(ids) != 2 {
			t.Fatalf("published %v, want both events", ids)
		}
		if n := statusCount(t, db, outbox.StatusPending); n != 0 {
			t.Errorf("%d rows left pending", n)
		}
	})
}

// TestConcurrentWritersOfOneAggregate: many transactions writing the same
// aggregate at once get distinct, gapless sequences in commit order.
func TestConcurrentWritersOfOneAggregate(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := newDB(t, d)
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for i := range 25 {
					write(t, db, event(fmt.Sprintf("w%d-%d", w, i), "hot"))
				}
			})
		}
		wg.Wait()
		pub := &recorder{}
		r := newRelay(t, db, pub, outbox.RelayConfig{})
		runOnce(t, r)
		if len(pub.published) != 200 {
			t.Fatalf("published %d, want 200", len(pub.published))
		}
		for i, m := range pub.published {
			ev, _ := natsjs.ParseEvent(m)
			if ev.Sequence != int64(i+1) {
				t.Fatalf("message %d has sequence %d", i, ev.Sequence)
			}
		}
	})
}

// TestManyEventsPerTransaction: a transaction's events, written in one
// call or several, of several aggregates (some new, some not, one twice),
// are numbered per aggregate in the order written, with no gap or double
// under concurrent writers. (On PostgreSQL they are one statement at
// commit.)
func TestManyEventsPerTransaction(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := newDB(t, d)
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Go(func() {
				for i := range 10 {
					id := func(k int) string { return fmt.Sprintf("w%d-%d-%d", w, i, k) }
					err := sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
						if _, err := tx.ExecContext(ctx, `INSERT INTO item (id) VALUES ($1)`, id(0)); err != nil {
							return err
						}
						// Aggregates b and a in turn, in both orders, a
						// new one of the writer's own, and a again.
						first, second := "a", "b"
						if (w+i)%2 == 1 {
							first, second = second, first
						}
						if err := outbox.Write(ctx, tx, event(id(1), first), event(id(2), second)); err != nil {
							return err
						}
						return outbox.Write(ctx, tx, event(id(3), fmt.Sprintf("own-%d-%d", w, i)), event(id(4), "a"))
					})
					if err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		pub := &recorder{}
		runOnce(t, newRelay(t, db, pub, outbox.RelayConfig{}))
		if len(pub.published) != 160 {
			t.Fatalf("published %d, want 160", len(pub.published))
		}
		next := numberedInOrder(t, pub.published)
		if next["a"] != 80 || next["b"] != 40 {
			t.Errorf("a has %d events, b %d; want 80 and 40", next["a"], next["b"])
		}
	})
}

// TestRelaysTakeTurns: two relays on one database never both publish, and
// when the leader stops the other takes over.
func TestRelaysTakeTurns(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := newDB(t, d)
		for i := range 10 {
			write(t, db, event(fmt.Sprint("e", i), "A"))
		}
		pubA, pubB := &recorder{}, &recorder{}
		a := newRelay(t, db, pubA, outbox.RelayConfig{BatchSize: 5})
		b := newRelay(t, db, pubB, outbox.RelayConfig{BatchSize: 5})
		if res := runOnce(t, a); !res.Leader || res.Published != 5 {
			t.Fatalf("a = %+v, want leader publishing 5", res)
		}
		if res := runOnce(t, b); res.Leader || res.Published != 0 {
			t.Fatalf("b = %+v, want a standby while a leads", res)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if err := a.Start(ctx); err != nil {
			t.Fatal(err)
		}
		a.Stop() // gives the lock or lease up
		// a's loop may have published the rest before it stopped; these
		// are b's for certain.
		for i := range 3 {
			write(t, db, event(fmt.Sprint("f", i), "A"))
		}
		if res := runOnce(t, b); !res.Leader || res.Published == 0 {
			t.Fatalf("b after a stopped = %+v, want it to take over", res)
		}
		runOnce(t, b)
		all := append(pubA.ids(), pubB.ids()...)
		slices.Sort(all)
		if len(slices.Compact(all)) != 13 || len(pubA.ids())+len(pubB.ids()) != 13 {
			t.Errorf("published %d in all (a %v, b %v), want 13 once each", len(all), pubA.ids(), pubB.ids())
		}
	})
}

// TestStalledLeaderIsReplaced: a leader that stops running without
// dying (a frozen process, a paused machine: on PostgreSQL its session
// and its lock stay) is replaced once it has been silent for its lease
// (SQLite) or LeaseTTL + PublishTimeout (PostgreSQL, whose server ends the
// silent session); running again, it finds it no longer leads.
func TestStalledLeaderIsReplaced(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := newDB(t, d)
		write(t, db, event("e1", "A"))
		cfg := outbox.RelayConfig{LeaseTTL: 200 * time.Millisecond, PublishTimeout: 300 * time.Millisecond}
		a := newRelay(t, db, &recorder{}, cfg)
		pubB := &recorder{}
		b := newRelay(t, db, pubB, cfg)
		if !runOnce(t, a).Leader { // a leads, then stalls (never runs again for now)
			t.Fatal("a did not lead")
		}
		write(t, db, event("e2", "A"))
		deadline := time.Now().Add(20 * time.Second)
		for !runOnce(t, b).Leader {
			if time.Now().After(deadline) {
				t.Fatal("b never took over from the stalled leader")
			}
			time.Sleep(20 * time.Millisecond) // waiting out the silence is the point
		}
		if got := fmt.Sprint(pubB.ids()); got != "[e2]" {
			t.Errorf("b published %s, want [e2]", got)
		}
		if runOnce(t, a).Leader {
			t.Error("a still leads after b took over")
		}
	})
}

// TestIdleLeaderKeepsItsLock: a started relay that polls rarely (it
// relies on wake-ups) and has nothing to do keeps its lock's session
// alive. The session's silence is bounded so that a stalled leader loses
// the lock (TestStalledLeaderIsReplaced); an idle, healthy one must not:
// it would lose the lock every few seconds, and PostgreSQL would log the
// session's end each time.
func TestIdleLeaderKeepsItsLock(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := newDB(t, d)
		cfg := outbox.RelayConfig{LeaseTTL: 200 * time.Millisecond, PublishTimeout: 300 * time.Millisecond, PollInterval: time.Hour}
		pubA := &recorder{}
		a := newRelay(t, db, pubA, cfg)
		write(t, db, event("e1", "A"))
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if err := a.Start(ctx); err != nil {
			t.Fatal(err)
		}
		b := newRelay(t, db, &recorder{}, cfg)
		deadline := time.Now().Add(10 * time.Second)
		for len(pubA.ids()) == 0 { // a leads: it published
			if time.Now().After(deadline) {
				t.Fatal("a never led")
			}
			time.Sleep(10 * time.Millisecond)
		}
		// Four times the bound on the lock session's silence, with
		// nothing to publish.
		time.Sleep(2 * time.Second)
		if runOnce(t, b).Leader {
			t.Error("b took the lead from an idle, healthy leader")
		}
	})
}

// TestRelayWakesOnCommit: with polling effectively off, a commit alone
// gets the event published.
func TestRelayWakesOnCommit(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := newDB(t, d)
		published := make(chan string, 10)
		pub := publisherFuncs{PublishBatchFunc: func(_ context.Context, msgs []natsjs.Message) ([]natsjs.PubAck, []error) {
			for _, m := range msgs {
				published <- m.ID
			}
			return make([]natsjs.PubAck, len(msgs)), make([]error, len(msgs))
		}}
		r := newRelay(t, db, pub, outbox.RelayConfig{PollInterval: time.Hour})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if err := r.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer r.Stop()
		write(t, db, event("woken", "A"))
		select {
		case id := <-published:
			if id != "woken" {
				t.Errorf("published %s", id)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the commit did not wake the relay")
		}
	})
}

// TestRelayWakesOnNotify: a relay in "another process" (its own handle on
// the database) is woken by PostgreSQL NOTIFY.
func TestRelayWakesOnNotify(t *testing.T) {
	writer := newDB(t, sqldb.Postgres)
	relayDB, err := sqldb.Open(context.Background(), writer.URL()+"&application_name=relay")
	if err != nil {
		t.Fatal(err)
	}
	defer relayDB.Close()
	published := make(chan string, 10)
	pub := publisherFuncs{PublishBatchFunc: func(_ context.Context, msgs []natsjs.Message) ([]natsjs.PubAck, []error) {
		for _, m := range msgs {
			published <- m.ID
		}
		return make([]natsjs.PubAck, len(msgs)), make([]error, len(msgs))
	}}
	r := newRelay(t, relayDB, pub, outbox.RelayConfig{PollInterval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	write(t, writer, event("notified", "A"))
	select {
	case id := <-published:
		if id != "notified" {
			t.Errorf("published %s", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("NOTIFY did not wake the relay")
	}
}

// TestWriterOfAnAggregateWaitsForTheOneBefore: a transaction that took an
// aggregate's next sequence number first but commits last must hold back
// the next writer of that aggregate, so that sequence order is commit
// order: a later transaction that saw the first one's effects can never
// get the lower number. PostgreSQL only: SQLite has a single writer, so
// the interleaving cannot occur there.
func TestWriterOfAnAggregateWaitsForTheOneBefore(t *testing.T) {
	ctx := context.Background()
	db := newDB(t, sqldb.Postgres)
	release, earlyDone := writeAndHold(t, db, event("early", "X"))
	lateDone := make(chan error, 1)
	go func() {
		lateDone <- sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
			return outbox.Write(ctx, tx, event("late", "X"))
		})
	}()
	// Another aggregate's writer does not wait.
	write(t, db, event("other", "Y"))

	waiting := false
	for range 500 {
		var n int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'
				AND query LIKE '%INSERT INTO outbox_aggregate%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if waiting = n == 1; waiting {
			break
		}
		select {
		case err := <-lateDone:
			t.Fatalf("the second writer of X committed (%v) while the first was still open", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if !waiting {
		t.Fatal("the second writer of X never waited for the first")
	}
	release()
	if err := <-earlyDone; err != nil {
		t.Fatal(err)
	}
	if err := <-lateDone; err != nil {
		t.Fatal(err)
	}
	pub := &recorder{}
	runOnce(t, newRelay(t, db, pub, outbox.RelayConfig{}))
	var got []string
	for _, m := range pub.published {
		ev, _ := natsjs.ParseEvent(m)
		got = append(got, fmt.Sprintf("%s#%d", ev.ID, ev.Sequence))
	}
	if fmt.Sprint(got) != "[early#1 other#1 late#2]" {
		t.Errorf("published %v, want [early#1 other#1 late#2]", got)
	}
}

// TestRelayWaitsOutABrokerOutage: a broker that cannot be reached is not
// the events' fault. While it is down no publish counts against a row, so
// an outage longer than the retry budget makes no row dead, and every row
// goes out, in order, once the broker is back.
func TestRelayWaitsOutABrokerOutage(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := newDB(t, d)
		srv := brokertest.RunRestartable(t)
		b := brokertest.Connect(t, srv.Server)
		if err := b.EnsureStream(ctx, natsjs.StreamSpec{Name: "OUTAGE", Subjects: []string{"sysops.test.>"}}); err != nil {
			t.Fatal(err)
		}
		write(t, db, event("a1", "A"))
		write(t, db, event("a2", "A"))
		write(t, db, event("b1", "B"))
		srv.Stop()

		r := newRelay(t, db, b, outbox.RelayConfig{MaxAttempts: 2, Backoff: func(int) time.Duration { return 0 },
			PublishTimeout: 300 * time.Millisecond})
		for range 4 {
			res := runOnce(t, r)
			if res.Published != 0 || res.Failed != 0 || res.Interrupted != 2 || !res.BrokerDown {
				t.Fatalf("round with the broker down = %+v, want the first rows of A and B interrupted (a2 waits behind a1), none failed, BrokerDown", res)
			}
		}
		rows, err := outbox.List(ctx, db, outbox.ListOptions{Status: outbox.StatusPending})
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 3 || rows[0].Attempts != 0 {
			t.Fatalf("pending after the outage = %+v, want all 3 with no attempt counted", rows)
		}

		// Started, the relay waits for the broker, and publishes
		// everything, the row written meanwhile too, soon after it is back.
		if err := r.Start(ctx); err != nil {
			t.Fatal(err)
		}
		write(t, db, event("b2", "B"))
		srv.Start()
		for deadline := time.Now().Add(20 * time.Second); statusCount(t, db, outbox.StatusPending) > 0; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d rows still pending 20 s after the broker came back", statusCount(t, db, outbox.StatusPending))
			}
		}
		if n := statusCount(t, db, outbox.StatusDead); n != 0 {
			t.Fatalf("%d rows dead after the outage, want none", n)
		}
		if n, err := b.StreamMessages(ctx, "OUTAGE"); err != nil || n != 4 {
			t.Errorf("stream holds %d messages (%v), want 4", n, err)
		}
	})
}

// TestRelayRidesOutADatabaseOutage: the producer's PostgreSQL goes away
// under a running relay (behind a proxy the test cuts: every connection,
// the relay's lock session too, reset, new ones refused) and comes back.
// The relay takes its lock again and publishes what was written before
// and after, nothing dead.
func TestRelayRidesOutADatabaseOutage(t *testing.T) {
	ctx := context.Background()
	db, proxy := sqldbtest.OpenBehindProxy(t)
	prepare(t, db)
	b := brokertest.Connect(t, brokertest.RunServer(t))
	if err := b.EnsureStream(ctx, natsjs.StreamSpec{Name: "DBOUTAGE", Subjects: []string{"sysops.test.>"}}); err != nil {
		t.Fatal(err)
	}
	r := newRelay(t, db, b, outbox.RelayConfig{PollInterval: 100 * time.Millisecond})
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	drained := func(want uint64) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			n, err := b.StreamMessages(ctx, "DBOUTAGE")
			if err == nil && n == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("stream holds %d messages (%v), want %d", n, err, want)
			}
		}
	}
	write(t, db, event("a1", "A"))
	drained(1)
	proxy.Cut()
	time.Sleep(time.Second)
	if err := proxy.Restore(); err != nil {
		t.Fatal(err)
	}
	write(t, db, event("a2", "A"))
	drained(2)
	if n := statusCount(t, db, outbox.StatusDead) + statusCount(t, db, outbox.StatusPending); n != 0 {
		t.Errorf("%d rows dead or pending after the outage, want none", n)
	}
}

// TestRelayCorruptRow: a row whose headers are not what Write stores
// (edited by hand) goes dead with the reason, instead of failing every
// round and stopping the relay; the other aggregate's events go on.
func TestRelayCorruptRow(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := newDB(t, d)
		write(t, db, event("a1", "A"))
		write(t, db, event("a2", "A"))
		write(t, db, event("b1", "B"))
		if _, err := db.ExecContext(ctx, `UPDATE outbox SET headers = '{"ce-id": "not a list"' WHERE event_id = 'a1'`); err != nil {
			t.Fatal(err)
		}
		pub := &recorder{}
		r := newRelay(t, db, pub, outbox.RelayConfig{})
		res := runOnce(t, r)
		if res.Dead != 1 || fmt.Sprint(pub.ids()) != "[b1]" {
			t.Fatalf("round = %+v, published %v; want a1 dead and b1 published, a2 waiting", res, pub.ids())
		}
		dead, err := outbox.List(ctx, db, outbox.ListOptions{Status: outbox.StatusDead})
		if err != nil {
			t.Fatal(err)
		}
		if len(dead) != 1 || dead[0].EventID != "a1" || !strings.Contains(dead[0].LastError, "headers") {
			t.Errorf("dead rows = %+v, want a1 with a reason naming its headers", dead)
		}
	})
}

// TestRelayRemakesALostStream: the stream the relay publishes to is gone
// (deleted behind the broker's back, a server back without its store).
// The broker makes it again; the rows that found it gone are not counted
// as attempts, and the next round publishes them.
func TestRelayRemakesALostStream(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := newDB(t, d)
		srv := brokertest.RunServer(t)
		b := brokertest.Connect(t, srv)
		if err := b.EnsureStream(ctx, natsjs.StreamSpec{Name: "LOST", Subjects: []string{"sysops.test.>"}}); err != nil {
			t.Fatal(err)
		}
		r := newRelay(t, db, b, outbox.RelayConfig{})
		write(t, db, event("e1", "A"))
		if res := runOnce(t, r); res.Published != 1 {
			t.Fatalf("first round = %+v", res)
		}
		if err := brokertest.JetStream(t, srv.ClientURL()).DeleteStream(ctx, "LOST"); err != nil {
			t.Fatal(err)
		}
		write(t, db, event("e2", "A"))
		if res := runOnce(t, r); res.Interrupted != 1 || res.Failed != 0 || res.Dead != 0 || res.BrokerDown {
			t.Fatalf("round that found the stream gone = %+v, want e2 interrupted, no attempt counted", res)
		}
		if res := runOnce(t, r); res.Published != 1 {
			t.Fatalf("next round = %+v, want e2 published into the stream made again", res)
		}
		rows, err := outbox.List(ctx, db, outbox.ListOptions{Status: outbox.StatusPending})
		if err != nil || len(rows) != 0 {
			t.Errorf("pending rows left: %+v, %v", rows, err)
		}
		if n, err := b.StreamMessages(ctx, "LOST"); err != nil || n != 1 {
			t.Errorf("the stream made again holds %d messages (%v), want e2", n, err)
		}
	})
}

// TestRelayRowTheBrokerRejects: a stream that takes messages of at most
// 1 KB refuses a 2 KB event for what it is. Sending it again cannot
// succeed, so the row goes dead at its first attempt, with the broker's
// reason, rather than after the whole retry budget; the other aggregate's
// events go on.
func TestRelayRowTheBrokerRejects(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := newDB(t, d)
		srv := brokertest.RunServer(t)
		b := brokertest.Connect(t, srv)
		if _, err := brokertest.JetStream(t, srv.ClientURL()).CreateStream(ctx, jetstream.StreamConfig{
			Name: "SMALL", Subjects: []string{"sysops.test.>"}, MaxMsgSize: 1024,
		}); err != nil {
			t.Fatal(err)
		}
		big := event("big", "A")
		big.Data = json.RawMessage(`"` + strings.Repeat("x", 2048) + `"`)
		write(t, db, big)
		write(t, db, event("b1", "B"))
		r := newRelay(t, db, b, outbox.RelayConfig{Backoff: func(int) time.Duration { return 0 }})
		res := runOnce(t, r)
		if res.Published != 1 || res.Dead != 1 {
			t.Fatalf("round = %+v, want b1 published and the big row dead at once", res)
		}
		dead, err := outbox.List(ctx, db, outbox.ListOptions{Status: outbox.StatusDead})
		if err != nil {
			t.Fatal(err)
		}
		if len(dead) != 1 || dead[0].EventID != "big" || dead[0].Attempts != 1 || !strings.Contains(dead[0].LastError, "maximum") {
			t.Errorf("dead rows = %+v, want big after one attempt, with the broker's reason", dead)
		}
	})
}

// TestRelayOnADatabaseRefusingWrites: while the relay's database answers
// but refuses writes (read-only after a failover), its rounds fail —
// on PostgreSQL after publishing, since only recording the round needs a
// write — and it pauses longer after each instead of publishing the same
// rows again at every poll. Once the database takes writes, the rows are
// published and recorded, none dead.
func TestRelayOnADatabaseRefusingWrites(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db, refuse := sqldbtest.OpenRefusing(t, d)
		prepare(t, db)
		for i := range 3 {
			write(t, db, event(fmt.Sprint("e", i), fmt.Sprint("agg", i)))
		}
		rec := &recorder{}
		r := newRelay(t, db, rec, outbox.RelayConfig{PollInterval: 50 * time.Millisecond})
		refuse(true)
		if err := r.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second)
		rec.mu.Lock()
		calls := rec.calls
		rec.mu.Unlock()
		// Polling every 50 ms would publish about 60 times in 3 s; the
		// pauses (50 ms doubling) allow 6.
		if calls > 8 {
			t.Errorf("%d publishes in 3 s of a database refusing writes, want a few", calls)
		}
		t.Logf("%d publishes while the database refused writes", calls)
		refuse(false)
		for deadline := time.Now().Add(20 * time.Second); statusCount(t, db, outbox.StatusPending) > 0; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d rows still pending after the database took writes again", statusCount(t, db, outbox.StatusPending))
			}
		}
		if n := statusCount(t, db, outbox.StatusDead); n != 0 {
			t.Errorf("%d rows dead after the database took writes again", n)
		}
		if got := fmt.Sprint(slices.Compact(slices.Sorted(slices.Values(rec.ids())))); got != "[e0 e1 e2]" {
			t.Errorf("published %s, want e0 e1 e2", got)
		}
	})
}

// TestRelayWaitsOutAFullBroker: a broker out of storage refuses every
// publish ("insufficient resources"); that is its state, not the rows'
// fault, so the relay counts no attempt and waits, as for a broker that
// cannot be reached, and no row goes dead however small the retry
// budget. Once space is freed, the rest is published.
func TestRelayWaitsOutAFullBroker(t *testing.T) {
	ctx := context.Background()
	db := newDB(t, sqldb.SQLite)
	srv := brokertest.RunServerWith(t, natsjs.ServerConfig{MaxStore: 256 << 10})
	b := brokertest.Connect(t, srv)
	if err := b.EnsureStream(ctx, natsjs.StreamSpec{Name: "FULL", Subjects: []string{"sysops.test.>"}}); err != nil {
		t.Fatal(err)
	}
	// 40 events of 8 KB: about 320 KB for a store of 256 KB.
	for i := range 40 {
		e := event(fmt.Sprint("e", i), fmt.Sprint("agg", i%8))
		e.Data = json.RawMessage(`"` + strings.Repeat("x", 8<<10) + `"`)
		write(t, db, e)
	}
	r := newRelay(t, db, b, outbox.RelayConfig{PollInterval: 20 * time.Millisecond, MaxAttempts: 2,
		Backoff: func(int) time.Duration { return time.Millisecond }})
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	stored := func() uint64 {
		n, err := b.StreamMessages(ctx, "FULL")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// Wait for the store to fill, then give the relay a second, ample
	// for a budget of two attempts a millisecond apart.
	for deadline, last := time.Now().Add(20*time.Second), uint64(0); ; time.Sleep(300 * time.Millisecond) {
		n := stored()
		if n > 0 && n == last {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stream kept growing: %d messages", n)
		}
		last = n
	}
	time.Sleep(time.Second)
	full := stored()
	if full >= 40 {
		t.Fatalf("the store took all %d messages: the test needs it full", full)
	}
	if n := statusCount(t, db, outbox.StatusDead); n != 0 {
		t.Fatalf("%d rows dead while the broker was full, want none", n)
	}
	var attempts int
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(SUM(attempts), 0) FROM outbox WHERE status = 'pending'`).Scan(&attempts); err != nil || attempts != 0 {
		t.Errorf("the waiting rows count %d attempts (%v), want none", attempts, err)
	}
	t.Logf("the broker took %d of 40 before it was full", full)

	s, err := brokertest.JetStream(t, srv.ClientURL()).Stream(ctx, "FULL")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); statusCount(t, db, outbox.StatusPending) > 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d rows still pending after space was freed", statusCount(t, db, outbox.StatusPending))
		}
	}
	if n := stored(); n != uint64(40-full) {
		t.Errorf("the stream holds %d after the purge, want the other %d", n, 40-full)
	}
	if n := statusCount(t, db, outbox.StatusDead); n != 0 {
		t.Errorf("%d rows dead, want none", n)
	}
}

// TestBulkTransaction: a transaction may write more events than one
// statement has room for as rows of parameters (PostgreSQL takes 65,535
// parameters, 7,281 events): 10,000 events of 50 aggregates commit, and
// each aggregate's are numbered from 1 in the order written.
func TestBulkTransaction(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := newDB(t, d)
		const n = 10000
		err := sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
			evs := make([]sysops.Event, 0, n)
			for i := range n {
				evs = append(evs, event(fmt.Sprint("e", i), fmt.Sprint("agg", i%50)))
			}
			return outbox.Write(ctx, tx, evs...)
		})
		if err != nil {
			t.Fatalf("a transaction of %d events: %v", n, err)
		}
		pub := &recorder{}
		r := newRelay(t, db, pub, outbox.RelayConfig{BatchSize: 5000})
		for range n / 5000 {
			runOnce(t, r)
		}
		if len(pub.published) != n {
			t.Fatalf("published %d, want %d", len(pub.published), n)
		}
		numberedInOrder(t, pub.published)
		for i, m := range pub.published {
			if m.ID != fmt.Sprint("e", i) {
				t.Fatalf("message %d is %s, want e%d: published out of the order written", i, m.ID, i)
			}
		}
	})
}

// numberedInOrder checks that each aggregate's events were published
// numbered 1, 2, 3 ... in that order, and returns how many each had.
func numberedInOrder(t *testing.T, published []natsjs.Message) map[string]int64 {
	t.Helper()
	next := map[string]int64{}
	for _, m := range published {
		ev, err := natsjs.ParseEvent(m)
		if err != nil {
			t.Fatal(err)
		}
		next[ev.AggregateID]++
		if ev.Sequence != next[ev.AggregateID] {
			t.Fatalf("event %s of %s has sequence %d, want %d", ev.ID, ev.AggregateID, ev.Sequence, next[ev.AggregateID])
		}
	}
	return next
}
