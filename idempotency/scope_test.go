package idempotency_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sysops-squad/sysops/idempotency"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

// counterServer serves POST /add?fail=... over a Transactional store: the
// handler adds one to a counter in sqldb.RunInScope and answers 201 with
// the new value; fail=rule answers 409 after a failed transaction and
// fail=server answers 500 after a successful one; together=N makes
// concurrent requests meet before they write (see below). runs counts
// the handler's runs.
func counterServer(t *testing.T, d sqldb.Dialect) (srv *httptest.Server, db *sqldb.DB, runs *atomic.Int32) {
	t.Helper()
	ctx := context.Background()
	db = sqldbtest.Open(t, d)
	runs = new(atomic.Int32)
	if _, err := sqldb.Migrate(ctx, db, idempotency.MigrationSet, idempotency.Migrations()); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)`, `INSERT INTO counter VALUES (1, 0)`} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	// monitor watches the database from outside db's pool, which the
	// waiting requests may fill.
	monitor := db
	if d == sqldb.Postgres {
		var err error
		if monitor, err = sqldb.Open(ctx, db.URL()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { monitor.Close() })
	}
	store := idempotency.New(db, idempotency.Config{Transactional: true})
	var arrived atomic.Int32
	together := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs.Add(1)
		// together=N makes N concurrent requests with one key meet. On
		// SQLite each looks the key up first: all N arrive here and are
		// held until they have, so that all of them race to store the
		// key. On PostgreSQL the first claims the key and the others
		// wait on its claim: the first is held here until N-1 requests
		// are waiting on a lock.
		if want, _ := strconv.Atoi(r.URL.Query().Get("together")); want > 0 {
			if d == sqldb.Postgres {
				waitForLockWaiters(t, monitor, want-1)
			} else {
				if int(arrived.Add(1)) == want {
					close(together)
				}
				select {
				case <-together:
				case <-time.After(10 * time.Second):
					t.Errorf("together=%d: only %d requests arrived", want, arrived.Load())
				}
			}
		}
		var n int
		err := sqldb.RunInScope(r.Context(), db, func(tx *sql.Tx) error {
			if err := tx.QueryRowContext(r.Context(), `UPDATE counter SET n = n + 1 WHERE id = 1 RETURNING n`).Scan(&n); err != nil {
				return err
			}
			if r.URL.Query().Get("fail") == "rule" {
				return errors.New("business rule broken")
			}
			return nil
		})
		switch {
		case err != nil && r.URL.Query().Get("fail") == "rule":
			http.Error(w, `{"error":"rule"}`, http.StatusConflict)
		case err != nil:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		case r.URL.Query().Get("fail") == "server":
			http.Error(w, "boom", http.StatusInternalServerError)
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusCreated)
			fmt.Fprintf(w, `{"n":%d}`, n)
		}
	})
	srv = httptest.NewServer(store.Middleware(h))
	t.Cleanup(srv.Close)
	return srv, db, runs
}

// waitForLockWaiters waits until n sessions of db's database wait on a
// lock, for at most 10 seconds.
func waitForLockWaiters(t *testing.T, db *sqldb.DB, n int) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		var waiting int
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		err := db.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting)
		cancel()
		if err != nil {
			t.Errorf("count lock waiters: %v", err)
			return
		}
		if waiting >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%d sessions wait on a lock after 10 s, want %d", waiting, n)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func counter(t *testing.T, db *sqldb.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(context.Background(), `SELECT n FROM counter WHERE id = 1`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestTransactionalAppliesOnceAndReplays(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		srv, db, _ := counterServer(t, d)
		first := post(t, srv.URL+"/add", "k1", `{}`)
		if first.status != http.StatusCreated || first.body != `{"n":1}` || first.replayed {
			t.Fatalf("first = %+v", first)
		}
		again := post(t, srv.URL+"/add", "k1", `{}`)
		if again.status != http.StatusCreated || again.body != first.body || !again.replayed {
			t.Errorf("repeat = %+v, want the first response replayed", again)
		}
		if other := post(t, srv.URL+"/add", "k1", `{"other":1}`); other.status != http.StatusUnprocessableEntity {
			t.Errorf("same key, other body = %+v, want 422", other)
		}
		if n := counter(t, db); n != 1 {
			t.Errorf("counter = %d, want 1", n)
		}
	})
}

// TestTransactionalConcurrentRepeats: repeats in flight together apply
// once, and all get the one response.
func TestTransactionalConcurrentRepeats(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		srv, db, runs := counterServer(t, d)
		var wg sync.WaitGroup
		replies := make([]reply, 8)
		errs := make([]error, 8)
		for i := range replies {
			wg.Go(func() { replies[i], errs[i] = send(srv.URL+"/add?together=8", "k-conc", `{}`) })
		}
		wg.Wait()
		for i, r := range replies {
			if errs[i] != nil || r.status != http.StatusCreated || r.body != `{"n":1}` {
				t.Errorf("reply %d = %+v, %v; want 201 {\"n\":1}", i, r, errs[i])
			}
		}
		if n := counter(t, db); n != 1 {
			t.Errorf("counter = %d after 8 concurrent repeats, want 1", n)
		}
		// On PostgreSQL the repeats waited for the first, and never ran
		// the handler; on SQLite they ran it and lost the race to store
		// the key.
		want := int32(8)
		if d == sqldb.Postgres {
			want = 1
		}
		if n := runs.Load(); n != want {
			t.Errorf("handler ran %d times for 8 concurrent repeats, want %d", n, want)
		}
	})
}

// TestTransactionalEffectAndKeyCommitTogether: when the key cannot be
// stored, the effect is rolled back with it — no effect is left that a
// repeat would apply again.
func TestTransactionalEffectAndKeyCommitTogether(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		srv, db, _ := counterServer(t, d)
		ctx := context.Background()
		trigger := `CREATE TRIGGER refuse_keys BEFORE INSERT ON idempotency_key BEGIN SELECT RAISE(ABORT, 'disk full'); END`
		drop := `DROP TRIGGER refuse_keys`
		if d == sqldb.Postgres {
			if _, err := db.ExecContext(ctx, `CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
				BEGIN RAISE EXCEPTION 'disk full'; END $$`); err != nil {
				t.Fatal(err)
			}
			trigger = `CREATE TRIGGER refuse_keys BEFORE INSERT ON idempotency_key FOR EACH ROW EXECUTE FUNCTION refuse()`
			drop = `DROP TRIGGER refuse_keys ON idempotency_key`
		}
		if _, err := db.ExecContext(ctx, trigger); err != nil {
			t.Fatal(err)
		}
		if r := post(t, srv.URL+"/add", "k2", `{}`); r.status != http.StatusServiceUnavailable {
			t.Errorf("reply when the key cannot be stored = %+v, want 503", r)
		}
		if n := counter(t, db); n != 0 {
			t.Errorf("counter = %d, want 0: the effect must roll back with the key", n)
		}
		if _, err := db.ExecContext(ctx, drop); err != nil {
			t.Fatal(err)
		}
		if r := post(t, srv.URL+"/add", "k2", `{}`); r.status != http.StatusCreated || r.body != `{"n":1}` {
			t.Errorf("retry = %+v, want 201 {\"n\":1}", r)
		}
	})
}

// TestTransactionalFailures: a failed business transaction keeps its 4xx
// answer for the key with no effect; a 5xx keeps nothing and undoes the
// effect, so a retry runs again.
func TestTransactionalFailures(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		srv, db, _ := counterServer(t, d)
		if r := post(t, srv.URL+"/add?fail=rule", "k3", `{}`); r.status != http.StatusConflict {
			t.Fatalf("rule broken = %+v, want 409", r)
		}
		if r := post(t, srv.URL+"/add?fail=rule", "k3", `{}`); r.status != http.StatusConflict || !r.replayed {
			t.Errorf("repeat of a 409 = %+v, want it replayed", r)
		}
		if r := post(t, srv.URL+"/add?fail=server", "k4", `{}`); r.status != http.StatusInternalServerError {
			t.Fatalf("server error = %+v, want 500", r)
		}
		if n := counter(t, db); n != 0 {
			t.Errorf("counter = %d, want 0 after a 409 and a 500", n)
		}
		if r := post(t, srv.URL+"/add", "k4", `{}`); r.status != http.StatusCreated || r.replayed || r.body != `{"n":1}` {
			t.Errorf("retry after a 500 = %+v, want it run again", r)
		}
	})
}

// TestTransactionalTakesOverAnExpiredReservation: a reservation left in
// progress by the reserve-first mode (its process died) does not block
// the key once its lock has expired; one still locked is a 409.
func TestTransactionalTakesOverAnExpiredReservation(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		srv, db, _ := counterServer(t, d)
		ctx := context.Background()
		// The hash of POST /add with body {}, as the middleware computes it.
		sum := sha256.Sum256([]byte("POST /add\n{}"))
		hash := hex.EncodeToString(sum[:])
		for _, q := range []struct {
			key   string
			until int64
		}{{"expired", time.Now().Add(-time.Minute).UnixMicro()}, {"locked", time.Now().Add(time.Hour).UnixMicro()}} {
			if _, err := db.ExecContext(ctx, `INSERT INTO idempotency_key (idem_key, request_hash, created_at, locked_until)
				VALUES ($1, $2, $3, $4)`, q.key, hash, time.Now().Add(-2*time.Minute).UnixMicro(), q.until); err != nil {
				t.Fatal(err)
			}
		}
		if r := post(t, srv.URL+"/add", "expired", `{}`); r.status != http.StatusCreated || r.body != `{"n":1}` {
			t.Errorf("key with an expired reservation = %+v, want 201 {\"n\":1}", r)
		}
		if r := post(t, srv.URL+"/add", "expired", `{}`); !r.replayed || r.body != `{"n":1}` {
			t.Errorf("repeat = %+v, want the response replayed", r)
		}
		if r := post(t, srv.URL+"/add", "locked", `{}`); r.status != http.StatusConflict || r.retryAfter == "" {
			t.Errorf("key with a live reservation = %+v, want 409 with Retry-After", r)
		}
		if n := counter(t, db); n != 1 {
			t.Errorf("counter = %d, want 1", n)
		}
	})
}
