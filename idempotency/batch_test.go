package idempotency_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/idempotency"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

// thingsServer serves POST /things/{id} {"n": N} alone (through the
// transactional middleware) and in batches: it adds N to thing {id}'s
// total; N < 0 is refused (409) and N = 500 answers 503, both without
// effect; N = 666 fails the whole batch, N = 13 panics.
func thingsServer(t *testing.T, d sqldb.Dialect) (*httptest.Server, *sqldb.DB) {
	t.Helper()
	db := sqldbtest.Open(t, d)
	return thingsServerOn(t, db, nil), db
}

// thingsServerOn serves things from db, its store logging to logger (nil:
// nowhere).
func thingsServerOn(t *testing.T, db *sqldb.DB, logger *slog.Logger) *httptest.Server {
	t.Helper()
	ctx := context.Background()
	if _, err := sqldb.Migrate(ctx, db, idempotency.MigrationSet, idempotency.Migrations()); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE thing (id TEXT PRIMARY KEY, total INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	add := func(ctx context.Context, tx *sql.Tx, id string, n int) (int, error) {
		var total int
		err := tx.QueryRowContext(ctx, `INSERT INTO thing (id, total) VALUES ($1, $2)
			ON CONFLICT (id) DO UPDATE SET total = thing.total + excluded.total RETURNING total`, id, n).Scan(&total)
		return total, err
	}
	store := idempotency.New(db, idempotency.Config{Transactional: true, Logger: logger})
	single := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in struct{ N int }
		_ = json.NewDecoder(r.Body).Decode(&in)
		var total int
		err := sqldb.RunInScope(r.Context(), db, func(tx *sql.Tx) (err error) {
			total, err = add(r.Context(), tx, r.PathValue("id"), in.N)
			return err
		})
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"total":%d}`+"\n", total)
	})
	batch := store.BatchHandler(map[string]idempotency.BatchFunc{
		"POST /things/{id}": func(ctx context.Context, tx *sql.Tx, items []*idempotency.Item) error {
			for _, it := range items {
				var in struct{ N int }
				if err := json.Unmarshal(it.Body, &in); err != nil {
					it.Fail(sysops.Errorf(sysops.EInvalid, "body: %v", err))
					continue
				}
				switch in.N {
				case 666:
					return errors.New("the database is on fire")
				case 13:
					panic("unlucky")
				case 500:
					it.Fail(sysops.Errorf(sysops.EUnavailable, "try later"))
					continue
				}
				if in.N < 0 {
					it.Fail(sysops.Errorf(sysops.EConflict, "cannot take %d away", -in.N))
					continue
				}
				total, err := add(ctx, tx, it.Request.PathValue("id"), in.N)
				if err != nil {
					return err
				}
				it.Reply(http.StatusCreated, "", map[string]int{"total": total})
			}
			return nil
		},
	})
	mux := http.NewServeMux()
	mux.Handle("POST /things/{id}", store.Middleware(single))
	mux.Handle(idempotency.BatchPath, batch)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func postBatch(t *testing.T, url string, calls ...idempotency.BatchCall) []idempotency.BatchResult {
	t.Helper()
	b, _ := json.Marshal(idempotency.BatchRequest{Calls: calls})
	resp, err := http.Post(url+idempotency.BatchPath, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out idempotency.BatchResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK || len(out.Results) != len(calls) {
		t.Fatalf("POST /batch: %s, %v, %+v", resp.Status, err, out)
	}
	return out.Results
}

func call(key, path string, n int) idempotency.BatchCall {
	return idempotency.BatchCall{Key: key, Path: path, Body: json.RawMessage(fmt.Sprintf(`{"n":%d}`, n))}
}

func total(t *testing.T, db *sqldb.DB, id string) int {
	t.Helper()
	var n int
	err := db.QueryRowContext(context.Background(), `SELECT total FROM thing WHERE id = $1`, id).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func summary(rs []idempotency.BatchResult) string {
	var parts []string
	for _, r := range rs {
		s := fmt.Sprintf("%d %s", r.Status, bytes.TrimSpace(r.Body))
		if r.Replayed {
			s += " replayed"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

func TestBatchAppliesEachCallOnce(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		srv, db := thingsServer(t, d)
		calls := []idempotency.BatchCall{call("k1", "/things/a", 1), call("k2", "/things/a", 2), call("k3", "/things/b", 5)}
		got := summary(postBatch(t, srv.URL, calls...))
		if want := `201 {"total":1}; 201 {"total":3}; 201 {"total":5}`; got != want {
			t.Fatalf("first batch: %s, want %s", got, want)
		}
		// The same batch again, and its calls alone: replayed, no effect.
		got = summary(postBatch(t, srv.URL, calls...))
		if want := `201 {"total":1} replayed; 201 {"total":3} replayed; 201 {"total":5} replayed`; got != want {
			t.Errorf("repeated batch: %s, want %s", got, want)
		}
		if r := post(t, srv.URL+"/things/a", "k2", `{"n":2}`); r.status != 201 || !r.replayed || strings.TrimSpace(r.body) != `{"total":3}` {
			t.Errorf("k2 alone after the batch: %+v", r)
		}
		if a, b := total(t, db, "a"), total(t, db, "b"); a != 3 || b != 5 {
			t.Errorf("totals a=%d b=%d, want 3 and 5", a, b)
		}
		// A call whose key a request alone used first gets that answer.
		if r := post(t, srv.URL+"/things/c", "k4", `{"n":7}`); r.status != 201 {
			t.Fatalf("alone: %+v", r)
		}
		got = summary(postBatch(t, srv.URL, call("k4", "/things/c", 7), call("k5", "/things/c", 1)))
		if want := `201 {"total":7} replayed; 201 {"total":8}`; got != want {
			t.Errorf("batch after a single request: %s, want %s", got, want)
		}
	})
}

func TestBatchCallsFailAlone(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		srv, db := thingsServer(t, d)
		res := postBatch(t, srv.URL,
			call("ok", "/things/a", 1),
			call("refused", "/things/a", -1),
			call("later", "/things/a", 500),
			call("", "/things/a", 1),
			call("lost", "/nowhere", 1),
			call("ok", "/things/a", 1), // the same call twice: one effect
			call("ok", "/things/a", 2), // the key with another request
			call("k1", "/things/a", 1), // fine
			idempotency.BatchCall{Key: "bad", Path: "/things/a", Body: json.RawMessage(`{"n":"x"}`)},
		)
		want := []int{201, 409, 503, 400, 404, 201, 422, 201, 400}
		for i, r := range res {
			if r.Status != want[i] {
				t.Errorf("call %d: %d %s, want %d", i, r.Status, r.Body, want[i])
			}
		}
		if !res[5].Replayed || string(res[5].Body) != string(res[0].Body) {
			t.Errorf("a key repeated in the batch: %+v, want the first call's answer", res[5])
		}
		if n := total(t, db, "a"); n != 2 {
			t.Errorf("total = %d, want 2 (the refused and failed calls leave nothing)", n)
		}
		// The refusal is kept, the 503 is not: its retry runs.
		got := summary(postBatch(t, srv.URL, call("refused", "/things/a", -1), idempotency.BatchCall{Key: "later", Path: "/things/a", Body: json.RawMessage(`{"n":500}`)}))
		if !strings.HasPrefix(got, `409 {"error":{"code":"conflict","message":"cannot take 1 away"}} replayed; 503`) ||
			strings.HasSuffix(got, "replayed") {
			t.Errorf("repeats: %s", got)
		}

		var kept int
		if err := db.QueryRowContext(context.Background(), `SELECT count(*) FROM idempotency_key WHERE idem_key = 'later'`).Scan(&kept); err != nil || kept != 0 {
			t.Errorf("the 503's key is kept (%d rows, %v); a retry must run the call again", kept, err)
		}

		// A call that fails its whole batch (its function returns an
		// error, or panics) fails alone: the batch's calls are applied
		// one at a time, so the others take effect. Its key stays free.
		res = postBatch(t, srv.URL, call("x1", "/things/z", 1), call("x2", "/things/z", 666), call("x3", "/things/z", 2),
			call("x4", "/things/z", 13))
		if res[0].Status != 201 || res[1].Status != 503 || res[2].Status != 201 || res[3].Status != 500 || total(t, db, "z") != 3 {
			t.Errorf("batch with a failing and a panicking call: %s; total %d", summary(res), total(t, db, "z"))
		}
		if r := post(t, srv.URL+"/things/z", "x1", `{"n":1}`); r.status != 201 || !r.replayed {
			t.Errorf("x1 after its batch: %+v, want its answer replayed", r)
		}
		if r := post(t, srv.URL+"/things/z", "x2", `{"n":5}`); r.status != 201 || r.replayed || total(t, db, "z") != 8 {
			t.Errorf("x2 after its batch failed: %+v, want it applied now", r)
		}
	})
}

// TestBatchOnADatabaseRefusingWrites: while the database refuses writes
// (read-only after a failover), every call of a batch is answered 503 at
// once — no call is to blame, so the batch is not applied again one call
// at a time — and nothing is kept; afterwards the same batch applies.
func TestBatchOnADatabaseRefusingWrites(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db, refuse := sqldbtest.OpenRefusing(t, d)
		var log bytes.Buffer
		var mu sync.Mutex
		srv := thingsServerOn(t, db, slog.New(slog.NewTextHandler(&lockedWriter{&mu, &log}, nil)))
		calls := []idempotency.BatchCall{call("r1", "/things/r", 1), call("r2", "/things/r", 2), call("r3", "/things/r", 3)}
		refuse(true)
		if got := summary(postBatch(t, srv.URL, calls...)); strings.Count(got, "503") != 3 || !strings.Contains(got, "unavailable") {
			t.Errorf("batch while the database refuses writes: %s, want three 503s", got)
		}
		mu.Lock()
		if strings.Contains(log.String(), "one at a time") {
			t.Errorf("the batch was applied again one call at a time:\n%s", log.String())
		}
		mu.Unlock()
		refuse(false)
		if got := summary(postBatch(t, srv.URL, calls...)); got != `201 {"total":1}; 201 {"total":3}; 201 {"total":6}` {
			t.Errorf("the same batch once the database takes writes: %s", got)
		}
	})
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestBatchRejectsBadBatches(t *testing.T) {
	srv, _ := thingsServer(t, sqldb.SQLite)
	for body, want := range map[string]string{
		`{"calls":[]}`:           "1 to 256 calls",
		`{"calls":[{"key":1}]}`:  "key",
		`{"calls":"everything"}`: "calls",
		`not json`:               "JSON",
	} {
		resp, err := http.Post(srv.URL+idempotency.BatchPath, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var eb struct{ Error sysops.Error }
		_ = json.NewDecoder(resp.Body).Decode(&eb)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(eb.Error.Message, want) {
			t.Errorf("%s: %d %q, want 400 naming %q", body, resp.StatusCode, eb.Error.Message, want)
		}
	}
}

// TestOneByOne: calls are applied in the order of their keys, whatever
// their order in the batch, so that batches lock what they share in one
// order; each gets its own answer, and a refusal only its own.
func TestOneByOne(t *testing.T) {
	db := sqldbtest.Open(t, sqldb.SQLite)
	if _, err := sqldb.Migrate(context.Background(), db, idempotency.MigrationSet, idempotency.Migrations()); err != nil {
		t.Fatal(err)
	}
	var applied []string
	fn := idempotency.OneByOne(func(it *idempotency.Item) string { return it.Request.PathValue("id") }, true,
		func(ctx context.Context, tx *sql.Tx, it *idempotency.Item) (int, string, any, error) {
			id := it.Request.PathValue("id")
			applied = append(applied, id)
			if id == "b" {
				return 0, "", nil, sysops.Errorf(sysops.EConflict, "b is busy")
			}
			return http.StatusOK, "", map[string]string{"id": id}, nil
		})
	srv := httptest.NewServer(idempotency.New(db, idempotency.Config{Transactional: true}).BatchHandler(
		map[string]idempotency.BatchFunc{"POST /locks/{id}": fn}))
	t.Cleanup(srv.Close)
	got := summary(postBatch(t, srv.URL, call("k1", "/locks/c", 1), call("k2", "/locks/a", 1), call("k3", "/locks/b", 1)))
	if want := `200 {"id":"c"}; 200 {"id":"a"}; 409 {"error":{"code":"conflict","message":"b is busy"}}`; got != want {
		t.Errorf("answers %s, want %s", got, want)
	}
	if fmt.Sprint(applied) != "[a b c]" {
		t.Errorf("applied in the order %v, want [a b c]", applied)
	}
}
