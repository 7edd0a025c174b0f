package idempotency_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sysops-squad/sysops/idempotency"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

type reply struct {
	status     int
	body       string
	replayed   bool
	retryAfter string
}

func post(t *testing.T, url, key, body string) reply {
	t.Helper()
	r, err := send(url, key, body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// send is post for goroutines other than the test's.
func send(url, key, body string) (reply, error) {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return reply{}, err
	}
	if key != "" {
		req.Header.Set(idempotency.Header, key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, string(b), resp.Header.Get(idempotency.ReplayedHeader) == "true", resp.Header.Get("Retry-After")}, nil
}

func newStore(t *testing.T, d sqldb.Dialect, cfg idempotency.Config) *idempotency.Store {
	t.Helper()
	db := sqldbtest.Open(t, d)
	if _, err := sqldb.Migrate(context.Background(), db, idempotency.MigrationSet, idempotency.Migrations()); err != nil {
		t.Fatal(err)
	}
	return idempotency.New(db, cfg)
}

func TestMiddleware(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		var runs atomic.Int64
		fail := atomic.Bool{}
		release := make(chan struct{})
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n := runs.Add(1)
			b, _ := io.ReadAll(r.Body)
			if strings.Contains(string(b), "slow") {
				<-release
			}
			if fail.Load() {
				http.Error(w, "down", http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Location", "/things/"+fmt.Sprint(n))
			w.WriteHeader(http.StatusCreated)
			fmt.Fprintf(w, `{"run":%d,"body":%q}`, n, b)
		})
		srv := httptest.NewServer(newStore(t, d, idempotency.Config{}).Middleware(h))
		defer srv.Close()

		first := post(t, srv.URL+"/things", "k1", `{"a":1}`)
		again := post(t, srv.URL+"/things", "k1", `{"a":1}`)
		if first.status != http.StatusCreated || first.replayed {
			t.Fatalf("first = %+v", first)
		}
		if again.status != first.status || again.body != first.body || !again.replayed {
			t.Errorf("repeat = %+v, want the first response %+v replayed", again, first)
		}
		if runs.Load() != 1 {
			t.Errorf("handler ran %d times, want 1", runs.Load())
		}

		if r := post(t, srv.URL+"/things", "k1", `{"a":2}`); r.status != http.StatusUnprocessableEntity ||
			!strings.Contains(r.body, "different request") {
			t.Errorf("key reused with another body = %+v, want 422", r)
		}
		if r := post(t, srv.URL+"/other", "k1", `{"a":1}`); r.status != http.StatusUnprocessableEntity {
			t.Errorf("key reused on another path = %+v, want 422", r)
		}

		// No key: every request runs.
		post(t, srv.URL+"/things", "", `{}`)
		post(t, srv.URL+"/things", "", `{}`)
		if runs.Load() != 3 {
			t.Errorf("handler ran %d times, want 3", runs.Load())
		}

		// A 5xx is not kept: the retry runs again and its answer is kept.
		fail.Store(true)
		if r := post(t, srv.URL+"/things", "k2", `{}`); r.status != http.StatusServiceUnavailable {
			t.Fatalf("failing handler = %+v", r)
		}
		fail.Store(false)
		if r := post(t, srv.URL+"/things", "k2", `{}`); r.status != http.StatusCreated || r.replayed {
			t.Errorf("retry after a 5xx = %+v, want the handler to run", r)
		}

		// Concurrent use of one key: the second gets 409 while the first runs.
		done := make(chan reply)
		before := runs.Load()
		go func() {
			r, err := send(srv.URL+"/things", "k3", `"slow"`)
			if err != nil {
				r.body = err.Error()
			}
			done <- r
		}()
		for runs.Load() == before {
			time.Sleep(time.Millisecond)
		}
		deadline := time.Now().Add(10 * time.Second)
		var busy reply
		for time.Now().Before(deadline) {
			if busy = post(t, srv.URL+"/things", "k3", `"slow"`); busy.status == http.StatusConflict {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		close(release)
		if busy.status != http.StatusConflict || !strings.Contains(busy.body, "in progress") || busy.retryAfter != "1" {
			t.Errorf("concurrent repeat = %+v, want 409 in progress", busy)
		}
		if r := <-done; r.status != http.StatusCreated {
			t.Errorf("first of the concurrent pair = %+v", r)
		}

		for _, key := range []string{"has space", strings.Repeat("x", idempotency.MaxKeyLength+1)} {
			if r := post(t, srv.URL+"/things", key, `{}`); r.status != http.StatusBadRequest || !strings.Contains(r.body, idempotency.Header) {
				t.Errorf("key %.20q = %+v, want 400 naming the header", key, r)
			}
		}
	})
}

// TestLiveReservationIsKept: a request that runs longer than LockTTL
// renews its reservation, so a repeat meanwhile is told to wait, not run.
func TestLiveReservationIsKept(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		var runs atomic.Int64
		slow := make(chan struct{})
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if runs.Add(1) == 1 {
				<-slow // runs for several LockTTLs
			}
			w.WriteHeader(http.StatusCreated)
		})
		srv := httptest.NewServer(newStore(t, d, idempotency.Config{LockTTL: 50 * time.Millisecond}).Middleware(h))
		defer srv.Close()
		first := make(chan reply, 1)
		go func() { r, _ := send(srv.URL, "k", `{}`); first <- r }()
		for runs.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond) // four LockTTLs
		if r := post(t, srv.URL, "k", `{}`); r.status != http.StatusConflict || r.retryAfter == "" || runs.Load() != 1 {
			t.Errorf("repeat while the first runs: %+v, runs %d; want 409 with Retry-After and no second run", r, runs.Load())
		}
		close(slow)
		if r := <-first; r.status != http.StatusCreated {
			t.Fatalf("first = %+v", r)
		}
		if r := post(t, srv.URL, "k", `{}`); r.status != http.StatusCreated || !r.replayed || runs.Load() != 1 {
			t.Errorf("repeat after the first: %+v, runs %d; want its answer replayed", r, runs.Load())
		}
	})
}

// firstBlocks is a handler that answers 201, its first request only once
// release is closed, and counts the requests it runs.
func firstBlocks(release <-chan struct{}) (http.Handler, *atomic.Int64) {
	runs := &atomic.Int64{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if runs.Add(1) == 1 {
			<-release
		}
		w.WriteHeader(http.StatusCreated)
	}), runs
}

// TestDeadReservationIsTakenOver: the reservation of a process that can
// no longer renew it (here, its database handle is gone) expires, and a
// repeat through another process runs.
func TestDeadReservationIsTakenOver(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		stuck := make(chan struct{}) // the first process never answers
		h, runs := firstBlocks(stuck)
		dying := sqldbtest.Open(t, d)
		if _, err := sqldb.Migrate(ctx, dying, idempotency.MigrationSet, idempotency.Migrations()); err != nil {
			t.Fatal(err)
		}
		other, err := sqldb.Open(ctx, dying.URL())
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		cfg := idempotency.Config{LockTTL: 50 * time.Millisecond}
		a := httptest.NewServer(idempotency.New(dying, cfg).Middleware(h))
		defer a.Close()
		defer close(stuck) // before a closes: it waits for its requests
		b := httptest.NewServer(idempotency.New(other, cfg).Middleware(h))
		defer b.Close()
		go send(a.URL, "k", `{}`)
		for runs.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		dying.Close()
		time.Sleep(150 * time.Millisecond)
		if r := post(t, b.URL, "k", `{}`); r.status != http.StatusCreated || runs.Load() != 2 {
			t.Errorf("after the first process's lock expired: %+v, runs %d; want the repeat to run", r, runs.Load())
		}
	})
}

// TestSkewedClockTakesNoLiveReservation: an instance of the service whose
// machine's clock runs a minute ahead goes by the database's clock, so a
// reservation another instance holds and renews is live to it too: a
// repeat sent to it waits (409 in progress) instead of running the
// request a second time.
func TestSkewedClockTakesNoLiveReservation(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		release := make(chan struct{}) // the first request is still running
		h, runs := firstBlocks(release)
		db := sqldbtest.Open(t, d)
		if _, err := sqldb.Migrate(ctx, db, idempotency.MigrationSet, idempotency.Migrations()); err != nil {
			t.Fatal(err)
		}
		a := httptest.NewServer(idempotency.New(db, idempotency.Config{}).Middleware(h))
		defer a.Close()
		defer close(release)
		ahead := &sqldb.Clock{Local: func() time.Time { return time.Now().Add(time.Minute) }}
		b := httptest.NewServer(idempotency.New(db, idempotency.Config{Clock: ahead}).Middleware(h))
		defer b.Close()
		go send(a.URL, "k", `{}`)
		for runs.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		if r := post(t, b.URL, "k", `{}`); r.status != http.StatusConflict || runs.Load() != 1 {
			t.Errorf("repeat through the skewed instance while the first runs: %+v, runs %d; want 409 and one run", r, runs.Load())
		}
		if off := ahead.Offset(); off > -59*time.Second || off < -61*time.Second {
			t.Errorf("the skewed instance's offset to the database: %v, want about -1m", off)
		}
	})
}

func TestPrune(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		s := newStore(t, d, idempotency.Config{Retention: time.Millisecond})
		srv := httptest.NewServer(s.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
		defer srv.Close()
		post(t, srv.URL, "a", `{}`)
		post(t, srv.URL, "b", `{}`)
		time.Sleep(5 * time.Millisecond)
		n, err := s.Prune(context.Background())
		if err != nil || n != 2 {
			t.Errorf("Prune = %d, %v; want 2", n, err)
		}
	})
}
