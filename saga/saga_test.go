package saga_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/saga"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

func newDB(t *testing.T, d sqldb.Dialect) *sqldb.DB {
	t.Helper()
	db := sqldbtest.Open(t, d)
	if _, err := sqldb.Migrate(context.Background(), db, saga.MigrationSet, saga.Migrations()); err != nil {
		t.Fatal(err)
	}
	return db
}

// recorder notes every call a participant gets.
type recorder struct {
	mu    sync.Mutex
	calls []string
	keys  map[string]int
}

func (r *recorder) note(what string, c saga.Call) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, what)
	if r.keys == nil {
		r.keys = map[string]int{}
	}
	r.keys[c.Key]++
}

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

// step returns a step whose action and compensation record their calls
// and fail as fail says.
func (r *recorder) step(name string, fail func(c saga.Call) error) saga.Step {
	return saga.Step{
		Name: name,
		Action: func(ctx context.Context, c saga.Call) (json.RawMessage, error) {
			r.note(name, c)
			if fail != nil {
				if err := fail(c); err != nil {
					return nil, err
				}
			}
			return json.RawMessage(fmt.Sprintf(`{"made":%q}`, name+"-"+c.SagaID[:4])), nil
		},
		Compensate: func(ctx context.Context, c saga.Call) (json.RawMessage, error) {
			r.note("undo "+name, c)
			return nil, nil
		},
		Retry: saga.RetryPolicy{MaxAttempts: 3, Initial: time.Millisecond, Max: 5 * time.Millisecond},
	}
}

func start(t *testing.T, db *sqldb.DB, cfg saga.Config, defs ...saga.Definition) *saga.Orchestrator {
	t.Helper()
	o, err := saga.New(db, cfg, defs...)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Stop)
	return o
}

func run(t *testing.T, o *saga.Orchestrator, def string, input any) saga.Saga {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := o.Run(ctx, def, "", input)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCommitAndCompensate(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := newDB(t, d)
		rec := &recorder{}
		var failCharge atomic.Bool
		def := saga.Definition{Name: "order", Version: 1, Steps: []saga.Step{
			rec.step("reserve", nil),
			rec.step("charge", func(c saga.Call) error {
				var made struct{ Made string }
				if !c.Output("reserve", &made) || !strings.HasPrefix(made.Made, "reserve-") {
					return saga.Reject(fmt.Errorf("no reservation in %v", c.Outputs))
				}
				if failCharge.Load() {
					return saga.Reject(errors.New("card declined"))
				}
				return nil
			}),
			rec.step("ship", nil),
		}}
		o := start(t, db, saga.Config{}, def)

		s := run(t, o, "order", map[string]int{"qty": 2})
		if s.State != saga.Committed || s.FinishedAt == nil || string(s.Input) != `{"qty":2}` {
			t.Fatalf("saga = %+v", s)
		}
		for _, st := range s.Steps {
			if st.Status != saga.StepDone || st.Attempts != 1 || len(st.Output) == 0 {
				t.Errorf("step %+v", st)
			}
		}
		if got := rec.got(); fmt.Sprint(got) != "[reserve charge ship]" {
			t.Errorf("calls = %v", got)
		}
		// Get reads the saga and its steps, in order, as Run returned it.
		if got, err := saga.Get(context.Background(), db, s.ID); err != nil || got.ID != s.ID || len(got.Steps) != 3 ||
			got.Steps[2].Name != "ship" || string(got.Steps[0].Output) != string(s.Steps[0].Output) || got.State != saga.Committed {
			t.Errorf("Get = %+v, %v; want %+v", got, err, s)
		}
		if _, err := saga.Get(context.Background(), db, "no-such-saga"); !errors.Is(err, saga.ErrNotFound) {
			t.Errorf("Get of an unknown saga: %v, want ErrNotFound", err)
		}

		rec.calls = nil
		failCharge.Store(true)
		s = run(t, o, "order", nil)
		if s.State != saga.Compensated || !strings.Contains(s.Reason, "card declined") {
			t.Fatalf("saga = %+v", s)
		}
		// The failed step is compensated too (it may have applied), then
		// the one before it; ship never ran.
		if got := rec.got(); fmt.Sprint(got) != "[reserve charge undo charge undo reserve]" {
			t.Errorf("calls = %v", got)
		}
		if st := s.Steps[1]; st.Attempts != 1 || st.Status != saga.StepCompensated {
			t.Errorf("a rejection is not retried: %+v", st)
		}
		if s.Steps[2].Status != saga.StepPending {
			t.Errorf("ship = %+v", s.Steps[2])
		}
		for key, n := range rec.keys {
			if n != 1 || !strings.HasPrefix(key, s.ID) && !strings.Contains(key, "/") {
				t.Errorf("key %s used %d times", key, n)
			}
		}
		if _, err := o.Begin(context.Background(), "nothing", "", nil); !errors.Is(err, saga.ErrUnknown) {
			t.Errorf("unknown definition: %v", err)
		}
	})
}

// TestIDsAndStepNamesMakeValidKeys: a saga id or a step name that could
// not go into an Idempotency-Key (a space, a character outside printable
// ASCII, too long) is refused where it is given, naming what is wrong,
// rather than every call of the saga failing at the participants.
func TestIDsAndStepNamesMakeValidKeys(t *testing.T) {
	db := newDB(t, sqldb.SQLite)
	rec := &recorder{}
	o := start(t, db, saga.Config{}, saga.Definition{Name: "k", Version: 1, Steps: []saga.Step{rec.step("one", nil)}})
	for _, id := range []string{"has space", "tab\there", "caf\u00e9", strings.Repeat("x", saga.MaxIDLength+1)} {
		if _, err := o.Begin(context.Background(), "k", id, nil); !errors.Is(err, saga.ErrInvalidID) {
			t.Errorf("Begin with id %.20q: %v, want ErrInvalidID", id, err)
		}
	}
	longest := strings.Repeat("x", saga.MaxIDLength)
	if _, err := o.Begin(context.Background(), "k", longest, nil); err != nil {
		t.Errorf("Begin with an id of %d characters: %v", len(longest), err)
	}
	if n := len(saga.CompensationKey(longest, strings.Repeat("s", saga.MaxStepNameLength))); n > 255 {
		t.Errorf("the longest key is %d characters, more than an Idempotency-Key takes", n)
	}
	for _, name := range []string{"two words", strings.Repeat("s", saga.MaxStepNameLength+1)} {
		_, err := saga.New(db, saga.Config{}, saga.Definition{Name: "bad", Version: 1, Steps: []saga.Step{rec.step(name, nil)}})
		if err == nil || !strings.Contains(err.Error(), "step name") {
			t.Errorf("a step named %.20q: %v, want an error about the step name", name, err)
		}
	}
}

func TestRetriesThenExhausts(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := newDB(t, d)
		rec := &recorder{}
		var flaky atomic.Int64
		def := saga.Definition{Name: "flaky", Version: 1, Steps: []saga.Step{
			rec.step("a", nil),
			rec.step("b", func(c saga.Call) error {
				if c.Key != saga.ActionKey(c.SagaID, "b") {
					return fmt.Errorf("key %q", c.Key)
				}
				if flaky.Add(1) <= 2 {
					return errors.New("timeout")
				}
				return nil
			}),
		}}
		o := start(t, db, saga.Config{BreakerFailures: 100}, def)
		s := run(t, o, "flaky", nil)
		if s.State != saga.Committed || s.Steps[1].Attempts != 3 {
			t.Fatalf("after two transient failures: %+v", s)
		}
		if rec.keys[saga.ActionKey(s.ID, "b")] != 3 {
			t.Errorf("retries did not reuse the key: %v", rec.keys)
		}
		flaky.Store(-100) // fails every time now
		s = run(t, o, "flaky", nil)
		if s.State != saga.Compensated || s.Steps[1].Attempts != 3 || !strings.Contains(s.Reason, "timeout") {
			t.Errorf("after the budget: %+v", s)
		}
	})
}

func TestFailingCompensationNeedsAttention(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := newDB(t, d)
		rec := &recorder{}
		var refundDown atomic.Bool
		refundDown.Store(true)
		pay := rec.step("pay", nil)
		pay.CompensationRetry = saga.RetryPolicy{MaxAttempts: 2, Initial: time.Millisecond, Max: 2 * time.Millisecond}
		pay.Compensate = func(ctx context.Context, c saga.Call) (json.RawMessage, error) {
			rec.note("refund", c)
			if refundDown.Load() {
				return nil, errors.New("billing unavailable")
			}
			return nil, nil
		}
		def := saga.Definition{Name: "p", Version: 1, Steps: []saga.Step{pay,
			rec.step("fail", func(saga.Call) error { return saga.Reject(errors.New("no")) })}}
		o := start(t, db, saga.Config{BreakerFailures: 100, PollInterval: 20 * time.Millisecond}, def)
		s := run(t, o, "p", nil)
		if s.State != saga.NeedsAttention || !strings.Contains(s.LastError, "billing unavailable") || s.Steps[0].CompensationAttempts != 2 {
			t.Fatalf("saga = %+v", s)
		}
		list, err := saga.List(context.Background(), db, saga.Filter{State: saga.NeedsAttention})
		if err != nil || len(list) != 1 || list[0].ID != s.ID {
			t.Errorf("list = %v, %v", list, err)
		}

		// The participant recovers; retry finishes the compensation.
		refundDown.Store(false)
		if err := saga.Retry(context.Background(), db, s.ID); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if s, err = o.Wait(ctx, s.ID); err != nil || s.State != saga.Compensated {
			t.Fatalf("after retry: %+v, %v", s, err)
		}
		if err := saga.Retry(context.Background(), db, s.ID); !errors.Is(err, saga.ErrWrongState) {
			t.Errorf("retry of a compensated saga: %v", err)
		}

		// Skip and resolve.
		refundDown.Store(true)
		s = run(t, o, "p", nil)
		if err := saga.Skip(context.Background(), db, s.ID); err != nil {
			t.Fatal(err)
		}
		if s, _ = o.Wait(ctx, s.ID); s.State != saga.Compensated || s.Steps[0].Status != saga.StepSkipped {
			t.Errorf("after skip: %+v", s)
		}
		s = run(t, o, "p", nil)
		if err := saga.Resolve(context.Background(), db, s.ID, "refunded by hand"); err != nil {
			t.Fatal(err)
		}
		if s, _ = saga.Get(ctx, db, s.ID); s.State != saga.Resolved || !strings.Contains(s.Reason, "by hand") {
			t.Errorf("after resolve: %+v", s)
		}
	})
}

// TestTakeOver: a saga whose orchestrator died mid-step (its lease still
// in the log) is taken over once the lease expires, and finished with the
// definition version it started on.
func TestTakeOver(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := newDB(t, d)
		rec := &recorder{}
		v1 := saga.Definition{Name: "w", Version: 1, Steps: []saga.Step{rec.step("one", nil), rec.step("two", nil)}}
		block := make(chan struct{})
		blocking := v1
		blocking.Steps = []saga.Step{rec.step("one", nil), rec.step("two", func(saga.Call) error { <-block; return nil })}
		blocking.Steps[1].Timeout = 10 * time.Second

		dead, err := saga.New(db, saga.Config{Owner: "dead", LeaseTTL: 12 * time.Second, PollInterval: time.Hour}, blocking)
		if err != nil {
			t.Fatal(err)
		}
		ctx, kill := context.WithCancel(context.Background())
		if err := dead.Start(ctx); err != nil {
			t.Fatal(err)
		}
		id, err := dead.Begin(context.Background(), "w", "saga-1", nil)
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for len(rec.got()) < 2 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		// "Crash": the lease stays in the log as the process left it, but
		// expired.
		if _, err := db.ExecContext(context.Background(), `UPDATE saga SET lease_until = 1 WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
		v2 := saga.Definition{Name: "w", Version: 2, Steps: []saga.Step{rec.step("other", nil)}}
		heir := start(t, db, saga.Config{Owner: "heir", PollInterval: 20 * time.Millisecond}, v1, v2)
		wctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		s, err := heir.Wait(wctx, id)
		if err != nil || s.State != saga.Committed {
			t.Fatalf("taken over: %+v, %v", s, err)
		}
		if s.Version != 1 || s.Steps[1].Attempts != 2 {
			t.Errorf("saga = %+v, want v1 with step two called twice", s)
		}
		if rec.keys[saga.ActionKey(id, "two")] != 2 || rec.keys[saga.ActionKey(id, "one")] != 1 {
			t.Errorf("keys = %v", rec.keys)
		}
		close(block)
		kill()
		dead.Stop()
		// The dead instance's late writes are fenced off by the lease.
		if s, _ := saga.Get(context.Background(), db, id); s.State != saga.Committed {
			t.Errorf("after the old instance stopped: %+v", s)
		}
		if n, _ := heir.Begin(context.Background(), "w", "", nil); n == "" {
			t.Error("begin on v2 failed")
		}
	})
}

// TestUnknownVersionWaits: during a rolling upgrade an instance meets
// unfinished sagas of a definition version it does not have (an older
// instance, a newer saga). It leaves them alone — they are neither taken
// nor set aside as needing attention — and warns; an instance that has
// the version takes them over and finishes them.
func TestUnknownVersionWaits(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := newDB(t, d)
		rec := &recorder{}
		v1 := saga.Definition{Name: "w", Version: 1, Steps: []saga.Step{rec.step("one", nil), rec.step("two", nil)}}
		v2 := saga.Definition{Name: "w", Version: 2, Steps: []saga.Step{rec.step("other", nil)}}
		stuck := v1
		stuck.Steps = []saga.Step{rec.step("one", nil), rec.step("two", func(saga.Call) error { return errors.New("not yet") })}
		stuck.Steps[1].Retry = saga.RetryPolicy{MaxAttempts: 1000, Initial: 10 * time.Millisecond, Max: 10 * time.Millisecond}
		first := start(t, db, saga.Config{Owner: "first", PollInterval: time.Hour}, stuck)
		id, err := first.Begin(context.Background(), "w", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); !slices.Contains(rec.got(), "two"); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the saga never reached its second step")
			}
		}
		first.Stop()
		if _, err := db.ExecContext(context.Background(), `UPDATE saga SET lease_until = 1 WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}

		var log lockedBuffer
		start(t, db, saga.Config{Owner: "newer", PollInterval: 20 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(&log, nil))}, v2)
		time.Sleep(time.Second)
		s, err := saga.Get(context.Background(), db, id)
		if err != nil || s.State != saga.Running || s.LeaseOwner == "newer" {
			t.Errorf("after a second with an instance of v2 only: %s, owner %q, %v; want running and left alone", s.State, s.LeaseOwner, err)
		}
		if !strings.Contains(log.String(), "wait for an instance that has their definition version") ||
			!strings.Contains(log.String(), "version=1 sagas=1") {
			t.Errorf("no warning about the waiting saga; the log:\n%s", log.String())
		}

		both := start(t, db, saga.Config{Owner: "both", PollInterval: 20 * time.Millisecond}, v1, v2)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if s, err := both.Wait(ctx, id); err != nil || s.State != saga.Committed || s.Version != 1 {
			t.Errorf("taken over by an instance with v1: %s v%d, %v; want committed on v1", s.State, s.Version, err)
		}
	})
}

// lockedBuffer is a log that goroutines write while a test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestCancelAndDeadline(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := newDB(t, d)
		rec := &recorder{}
		slow := func(c saga.Call) error { return errors.New("not yet") }
		mk := func(name string, deadline time.Duration) saga.Definition {
			s := rec.step("wait", slow)
			s.Retry = saga.RetryPolicy{MaxAttempts: 1000, Initial: 5 * time.Millisecond, Max: 10 * time.Millisecond}
			return saga.Definition{Name: name, Version: 1, Deadline: deadline, Steps: []saga.Step{rec.step("first", nil), s}}
		}
		// Long enough for the first step to run on a busy machine; the
		// second fails until the deadline passes.
		o := start(t, db, saga.Config{BreakerFailures: 10000}, mk("short", time.Second), mk("long", time.Hour))
		s := run(t, o, "short", nil)
		if s.State != saga.Compensated || s.Reason != "deadline exceeded" || s.Steps[0].Status != saga.StepCompensated {
			t.Errorf("past the deadline: %+v", s)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		id, err := o.Begin(ctx, "long", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		if err := saga.Cancel(ctx, db, id, "customer changed their mind"); err != nil {
			t.Fatal(err)
		}
		if s, _ = o.Wait(ctx, id); s.State != saga.Compensated || s.Reason != "cancelled: customer changed their mind" {
			t.Errorf("cancelled: %+v", s)
		}
		if err := saga.Cancel(ctx, db, id, ""); !errors.Is(err, saga.ErrWrongState) {
			t.Errorf("cancel a compensated saga: %v", err)
		}
	})
}

// TestBreakerStopsRetryStorm: a participant that is down gets a few
// calls, not one per attempt of every saga.
func TestBreakerStopsRetryStorm(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := newDB(t, d)
		var calls atomic.Int64
		down := saga.Step{Name: "down", Participant: "billing",
			Action: func(context.Context, saga.Call) (json.RawMessage, error) {
				calls.Add(1)
				return nil, errors.New("connection refused")
			},
			Retry: saga.RetryPolicy{MaxAttempts: 3, Initial: time.Millisecond, Max: 2 * time.Millisecond}}
		def := saga.Definition{Name: "b", Version: 1, Deadline: 300 * time.Millisecond, Steps: []saga.Step{down}}
		o := start(t, db, saga.Config{BreakerFailures: 3, BreakerCooldown: time.Second}, def)
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				if s := run(t, o, "b", nil); s.State != saga.Compensated {
					t.Errorf("saga = %+v", s)
				}
			})
		}
		wg.Wait()
		// 20 sagas × 3 attempts would be 60 calls without the breaker.
		if n := calls.Load(); n > 10 {
			t.Errorf("the participant got %d calls; the breaker should have stopped most", n)
		}
		// The orchestrator's own count agrees, and shows what it held back.
		st := o.Stats().Participants["billing"]
		if st.Made != calls.Load() || st.Failed != st.Made || st.Refused == 0 {
			t.Errorf("stats %+v, with %d calls made", st, calls.Load())
		}
	})
}

func TestLogWritesShareCommits(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := newDB(t, d)
		rec := &recorder{}
		def := saga.Definition{Name: "g", Version: 1, Steps: []saga.Step{rec.step("a", nil), rec.step("b", nil), rec.step("c", nil)}}
		o := start(t, db, saga.Config{}, def)
		var wg sync.WaitGroup
		for range 64 {
			wg.Go(func() {
				if s := run(t, o, "g", nil); s.State != saga.Committed {
					t.Errorf("saga = %+v", s)
				}
			})
		}
		wg.Wait()
		st := o.Stats()
		// Per saga: the begin (which logs the first step's start), the
		// start of each later step (with the success of the one before),
		// the end.
		if st.LogWrites != 64*4 || st.LogCommits >= st.LogWrites {
			t.Errorf("stats = %+v: want 256 writes in fewer commits", st)
		}
		t.Logf("%d log writes in %d commits", st.LogWrites, st.LogCommits)
	})
}

func TestHandler(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := newDB(t, d)
		rec := &recorder{}
		pay := rec.step("pay", nil)
		pay.Compensate = func(context.Context, saga.Call) (json.RawMessage, error) { return nil, errors.New("refund failed") }
		pay.CompensationRetry = saga.RetryPolicy{MaxAttempts: 1}
		def := saga.Definition{Name: "h", Version: 1, Steps: []saga.Step{pay, rec.step("no", func(saga.Call) error { return saga.Reject(errors.New("no")) })}}
		o := start(t, db, saga.Config{PollInterval: time.Hour}, def)
		s := run(t, o, "h", nil)
		srv := httptest.NewServer(saga.Handler("/ops/sagas", db, nil))
		defer srv.Close()
		get := func(path string) (int, string) {
			resp, err := http.Get(srv.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var b strings.Builder
			_, _ = fmt.Fprint(&b, resp.Body)
			buf := make([]byte, 1<<16)
			n, _ := resp.Body.Read(buf)
			return resp.StatusCode, string(buf[:n])
		}
		post := func(path, body string) int {
			resp, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		if code, body := get("/ops/sagas?state=needs_attention"); code != 200 || !strings.Contains(body, s.ID) {
			t.Errorf("list: %d %s", code, body)
		}
		if code, body := get("/ops/sagas/" + s.ID); code != 200 || !strings.Contains(body, "refund failed") {
			t.Errorf("show: %d %s", code, body)
		}
		if code, body := get("/ops/sagas/nope"); code != 404 || !strings.Contains(body, `saga \"nope\" not found`) {
			t.Errorf("unknown saga: %d %s", code, body)
		}
		if _, err := saga.Get(context.Background(), db, "nope"); !errors.Is(err, saga.ErrNotFound) {
			t.Errorf("Get of an unknown saga: %v, want ErrNotFound", err)
		}
		if code, body := get("/ops/sagas?state=weird"); code != 400 || !strings.Contains(body, `unknown saga state \"weird\" (running, compensating`) {
			t.Errorf("bad state: %d %s", code, body)
		}
		if code, body := get("/ops/sagas?status=committed"); code != 400 || !strings.Contains(body, `unknown query parameter \"status\" (known: state, definition, limit)`) {
			t.Errorf("mistyped filter: %d %s, want 400 naming it", code, body)
		}
		if code, body := get("/ops/sagas?limit=0"); code != 400 || !strings.Contains(body, "from 1 to 1000") {
			t.Errorf("limit 0: %d %s", code, body)
		}
		if _, err := saga.List(context.Background(), db, saga.Filter{State: "weird"}); sysops.CodeOf(err) != sysops.EInvalid {
			t.Errorf("List of an unknown state: %v, want an invalid error", err)
		}
		if code := post("/ops/sagas/"+s.ID+"/resolve", `{}`); code != 400 {
			t.Errorf("resolve without note: %d", code)
		}
		if code := post("/ops/sagas/"+s.ID+"/resolve", `{"note":"refunded by hand"}`); code != 200 {
			t.Errorf("resolve: %d", code)
		}
		if code := post("/ops/sagas/"+s.ID+"/retry", ``); code != 409 {
			t.Errorf("retry a resolved saga: %d", code)
		}
	})
}

// TestInstancesShareTheWork: two orchestrators on one log, sagas begun on
// both and resumed by whichever polls: every saga is driven by one of
// them, each step called once.
func TestInstancesShareTheWork(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := newDB(t, d)
		rec := &recorder{}
		def := saga.Definition{Name: "s", Version: 1, Steps: []saga.Step{rec.step("a", nil), rec.step("b", nil)}}
		a := start(t, db, saga.Config{Owner: "a", PollInterval: 10 * time.Millisecond}, def)
		b := start(t, db, saga.Config{Owner: "b", PollInterval: 10 * time.Millisecond}, def)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var ids []string
		for i := range 40 {
			o := a
			if i%2 == 1 {
				o = b
			}
			id, err := o.Begin(ctx, "s", "", nil)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		// Sagas handed back to the pool (as after a retry) are claimed by
		// one instance or the other, never both.
		for i := range 20 {
			id := fmt.Sprint("pooled-", i)
			_, err := db.ExecContext(ctx, `INSERT INTO saga (id, definition, version, input, state, deadline_at, next_run_at,
				created_at, updated_at, steps) VALUES ($1, 's', 1, 'null', 'running', $2, 0, 0, 0,
				'[{"index":0,"name":"a","status":"pending","attempts":0,"comp_attempts":0,"updated_at":0},
				  {"index":1,"name":"b","status":"pending","attempts":0,"comp_attempts":0,"updated_at":0}]')`,
				id, time.Now().Add(time.Hour).UnixMicro())
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		for _, id := range ids {
			s, err := a.Wait(ctx, id)
			if err != nil || s.State != saga.Committed {
				t.Fatalf("saga %s: %+v, %v", id, s, err)
			}
		}
		for _, id := range ids {
			for _, step := range []string{"a", "b"} {
				if n := rec.keys[saga.ActionKey(id, step)]; n != 1 {
					t.Errorf("saga %s step %s called %d times", id, step, n)
				}
			}
		}
	})
}

// What Run (Wait) returns for a saga this instance drove is what the log
// holds, field for field, whatever the ending: committed, compensated,
// cancelled, or needing attention.
func TestWaitReturnsTheLoggedSaga(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := newDB(t, d)
		rec := &recorder{}
		refuse := func(saga.Call) error { return saga.Reject(errors.New("no room")) }
		stuck := rec.step("a", nil)
		stuck.Compensate = func(context.Context, saga.Call) (json.RawMessage, error) { return nil, errors.New("ledger down") }
		stuck.CompensationRetry = saga.RetryPolicy{MaxAttempts: 2, Initial: time.Millisecond, Max: time.Millisecond}
		release := make(chan struct{})
		late := &recorder{}
		pivot := late.step("p", nil)
		pivot.Forward = true
		slow := rec.step("a", nil)
		action := slow.Action
		slow.Action = func(ctx context.Context, c saga.Call) (json.RawMessage, error) {
			<-release
			return action(ctx, c)
		}
		o := start(t, db, saga.Config{},
			saga.Definition{Name: "ok", Version: 1, Steps: []saga.Step{rec.step("a", nil), rec.step("b", nil)}},
			saga.Definition{Name: "refused", Version: 1, Steps: []saga.Step{rec.step("a", nil), rec.step("b", refuse)}},
			saga.Definition{Name: "stuck", Version: 1, Steps: []saga.Step{stuck, rec.step("b", refuse)}},
			saga.Definition{Name: "cancelled", Version: 1, Steps: []saga.Step{slow, rec.step("b", nil)}},
			saga.Definition{Name: "late", Version: 1, Deadline: time.Nanosecond, Steps: []saga.Step{late.step("a", nil)}},
			saga.Definition{Name: "late-pivot", Version: 1, Deadline: time.Nanosecond, Steps: []saga.Step{pivot}},
		)
		want := map[string]saga.State{"ok": saga.Committed, "refused": saga.Compensated, "stuck": saga.NeedsAttention,
			"cancelled": saga.Compensated, "late": saga.Compensated, "late-pivot": saga.Compensated}
		for _, def := range []string{"ok", "refused", "stuck", "cancelled", "late", "late-pivot"} {
			id, err := o.Begin(ctx, def, "", map[string]string{"def": def})
			if err != nil {
				t.Fatal(err)
			}
			if def == "cancelled" {
				if err := saga.Cancel(ctx, db, id, "changed my mind"); err != nil {
					t.Fatal(err)
				}
				close(release)
			}
			wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			got, err := o.Wait(wctx, id)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			if got.State != want[def] {
				t.Errorf("%s: state %s, want %s", def, got.State, want[def])
			}
			logged, err := saga.Get(ctx, db, id)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(logged, got); diff != "" {
				t.Errorf("%s: Wait returned what the log does not hold (-log +Wait):\n%s", def, diff)
			}
			if strings.HasPrefix(def, "late") {
				// Past its deadline before its first step: Begin logged
				// that step as started, but it was never called, so
				// nothing is undone and the log says so — even when that
				// step is a Forward one, past which a saga goes on.
				if calls := late.got(); len(calls) != 0 || logged.Steps[0].Status != saga.StepPending || logged.Steps[0].Attempts != 0 {
					t.Errorf("late: calls %v, first step %+v; want no call and a pending step", calls, logged.Steps[0])
				}
			}
		}
	})
}

// TestLogOutage: the orchestrator's own database goes away while sagas
// are in flight (PostgreSQL behind a proxy the test cuts: every
// connection reset, new ones refused) and comes back. Every saga then
// goes on from its log and commits; none is compensated, none is left
// running or needing attention, because nothing failed but the log.
func TestLogOutage(t *testing.T) {
	db, proxy := sqldbtest.OpenBehindProxy(t)
	rideOutLogOutage(t, db, proxy.Cut, func() {
		if err := proxy.Restore(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestLogRefusesWrites: the same when the orchestrator's database answers
// but refuses every write for a while, as a PostgreSQL primary demoted in
// a failover, or an SQLite file on a file system remounted read-only,
// does.
func TestLogRefusesWrites(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db, refuse := sqldbtest.OpenRefusing(t, d)
		rideOutLogOutage(t, db, func() { refuse(true) }, func() { refuse(false) })
	})
}

// rideOutLogOutage runs 30 sagas of three steps on db, takes the log away
// (begin) for 2 s while they are in flight, brings it back (end), and
// checks that every saga committed with nothing compensated.
func rideOutLogOutage(t *testing.T, db *sqldb.DB, begin, end func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := sqldb.Migrate(ctx, db, saga.MigrationSet, saga.Migrations()); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	slow := func(saga.Call) error { time.Sleep(20 * time.Millisecond); return nil }
	def := saga.Definition{Name: "o", Version: 1, Steps: []saga.Step{rec.step("a", slow), rec.step("b", slow), rec.step("c", slow)}}
	for i := range def.Steps {
		def.Steps[i].Timeout = time.Second
	}
	o := start(t, db, saga.Config{Owner: "o", LeaseTTL: 3 * time.Second, PollInterval: 100 * time.Millisecond}, def)
	var ids []string
	for range 30 {
		id, err := o.Begin(ctx, "o", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for len(rec.got()) < 20 {
		if ctx.Err() != nil {
			t.Fatal("the sagas never started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	begin()
	atCut := len(rec.got())
	time.Sleep(2 * time.Second)
	atRestore := len(rec.got())
	end()
	if atRestore >= 3*len(ids) {
		t.Fatalf("all %d steps ran before the log came back: the outage hit no saga in flight", atRestore)
	}
	t.Logf("steps called: %d when the log was cut, %d when it came back, of %d", atCut, atRestore, 3*len(ids))
	for _, id := range ids {
		s, err := o.Wait(ctx, id)
		if err != nil || s.State != saga.Committed {
			t.Errorf("saga %s after the outage: %s (%s), %v", id, s.State, s.Reason, err)
		}
	}
	for _, c := range rec.got() {
		if strings.HasPrefix(c, "undo ") {
			t.Errorf("a step was compensated (%s), though only the log failed", c)
		}
	}
}

// TestUnreadableRowIsSetAside: a saga whose row in the log cannot be read
// back (its steps edited by hand) is set aside as needs_attention with
// the reason, rather than claimed, failed and claimed again at every
// poll; the other sagas go on, and a person can resolve it.
func TestUnreadableRowIsSetAside(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := newDB(t, d)
		ctx := context.Background()
		rec := &recorder{}
		block := make(chan struct{})
		defer close(block)
		blocking := saga.Definition{Name: "u", Version: 1, Steps: []saga.Step{rec.step("one", func(saga.Call) error { <-block; return nil })}}
		first, err := saga.New(db, saga.Config{Owner: "first", PollInterval: time.Hour}, blocking)
		if err != nil {
			t.Fatal(err)
		}
		fctx, kill := context.WithCancel(ctx)
		defer kill()
		if err := first.Start(fctx); err != nil {
			t.Fatal(err)
		}
		id, err := first.Begin(ctx, "u", "broken", nil)
		if err != nil {
			t.Fatal(err)
		}
		// The row is edited by hand, and its lease left to expire.
		if _, err := db.ExecContext(ctx, `UPDATE saga SET steps = '[{"index": "one"', lease_until = 1 WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
		if _, err := saga.Get(ctx, db, id); !errors.Is(err, saga.ErrUnreadable) {
			t.Fatalf("Get of the edited row: %v, want ErrUnreadable", err)
		}
		def := saga.Definition{Name: "u", Version: 1, Steps: []saga.Step{rec.step("one", nil)}}
		heir := start(t, db, saga.Config{Owner: "heir", PollInterval: 10 * time.Millisecond}, def)
		eventually(t, "the broken saga to be set aside", func() bool {
			list, err := saga.List(ctx, db, saga.Filter{State: saga.NeedsAttention})
			return err == nil && len(list) == 1 && list[0].ID == id && strings.Contains(list[0].LastError, "steps")
		})
		if s := run(t, heir, "u", nil); s.State != saga.Committed {
			t.Errorf("another saga: %+v", s)
		}
		if err := saga.Retry(ctx, db, id); !errors.Is(err, saga.ErrWrongState) || !strings.Contains(err.Error(), "cannot be read") {
			t.Errorf("retry of the broken saga: %v", err)
		}
		if err := saga.Resolve(ctx, db, id, "fixed by hand"); err != nil {
			t.Fatalf("resolve: %v", err)
		}
		list, err := saga.List(ctx, db, saga.Filter{State: saga.Resolved})
		if err != nil || len(list) != 1 || list[0].ID != id {
			t.Errorf("resolved: %+v, %v", list, err)
		}
	})
}

// eventually waits up to 10 s for cond, failing the test after.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSkewedClockTakesNoLiveSaga: an instance whose machine's clock runs
// a minute ahead goes by the database's clock, so it finds another
// instance's live lease live and takes nothing over; a deadline it sets
// is the database's time plus the definition's deadline.
func TestSkewedClockTakesNoLiveSaga(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := newDB(t, d)
		rec := &recorder{}
		block := make(chan struct{})
		defer close(block)
		def := saga.Definition{Name: "s", Version: 1, Deadline: time.Hour,
			Steps: []saga.Step{rec.step("wait", func(saga.Call) error { <-block; return nil })}}
		def.Steps[0].Timeout = 5 * time.Second
		a := start(t, db, saga.Config{Owner: "a", PollInterval: time.Hour}, def)
		id, err := a.Begin(ctx, "s", "held", nil)
		if err != nil {
			t.Fatal(err)
		}
		ahead := &sqldb.Clock{Local: func() time.Time { return time.Now().Add(time.Minute) }}
		skewed := start(t, db, saga.Config{Owner: "skewed", PollInterval: time.Hour, Clock: ahead}, def)
		if n, err := skewed.RunOnce(ctx); err != nil || n != 0 {
			t.Errorf("the skewed instance claimed %d sagas (%v); a's lease is live", n, err)
		}
		if off := ahead.Offset(); off > -59*time.Second || off < -61*time.Second {
			t.Errorf("offset %v, want about -1m", off)
		}
		other, err := skewed.Begin(ctx, "s", "begun-skewed", nil)
		if err != nil {
			t.Fatal(err)
		}
		s, err := saga.Get(ctx, db, other)
		if err != nil {
			t.Fatal(err)
		}
		if left := time.Until(s.DeadlineAt); left > time.Hour+5*time.Second || left < time.Hour-5*time.Second {
			t.Errorf("a saga begun on the skewed instance has %v until its deadline, want about 1h", left)
		}
		if h, _ := saga.Get(ctx, db, id); h.LeaseOwner != "a" {
			t.Errorf("lease owner of a's saga: %q", h.LeaseOwner)
		}
	})
}

// TestClaimSkipsALockedSaga: on PostgreSQL, a saga whose row another
// session holds locked (a stalled process inside a transaction, say) is
// skipped by the instances looking for work, not waited for — the wait
// would hold up every claim behind it — and claimed once the lock is gone.
func TestClaimSkipsALockedSaga(t *testing.T) {
	ctx := context.Background()
	db := newDB(t, sqldb.Postgres)
	rec := &recorder{}
	block := make(chan struct{})
	defer close(block)
	def := saga.Definition{Name: "l", Version: 1, Steps: []saga.Step{rec.step("wait", func(saga.Call) error { <-block; return nil })}}
	first := start(t, db, saga.Config{Owner: "first", PollInterval: time.Hour}, def)
	id, err := first.Begin(ctx, "l", "locked", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Its lease expired, and its row locked by a transaction left open.
	if _, err := db.ExecContext(ctx, `UPDATE saga SET lease_until = 1 WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	tx, err := db.Writer().BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT id FROM saga WHERE id = $1 FOR UPDATE`, id); err != nil {
		t.Fatal(err)
	}
	heir, err := saga.New(db, saga.Config{Owner: "heir", PollInterval: time.Hour}, def)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if n, err := heir.RunOnce(wctx); err != nil || n != 0 {
		t.Fatalf("with the row locked: claimed %d, %v; want it skipped at once", n, err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if n, err := heir.RunOnce(ctx); err != nil || n != 1 {
		t.Errorf("with the lock gone: claimed %d, %v; want the saga", n, err)
	}
}
