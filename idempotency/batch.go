package idempotency

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/internal/httpx"
	"github.com/sysops-squad/sysops/sqldb"
)

// BatchPath is where a service takes batches of POSTs.
const BatchPath = "/batch"

// MaxBatchCalls is the most calls one batch may carry.
const MaxBatchCalls = 256

// BatchRequest is the body of POST /batch: several POSTs, each with its
// own Idempotency-Key, to be applied in one transaction.
type BatchRequest struct {
	Calls []BatchCall `json:"calls"`
}

// BatchCall is one POST of a batch: what the request would carry alone.
type BatchCall struct {
	Key  string          `json:"key"`
	Path string          `json:"path"`
	Body json.RawMessage `json:"body,omitempty"`
}

// BatchResponse is the answer to POST /batch: one result per call, in
// order.
type BatchResponse struct {
	Results []BatchResult `json:"results"`
}

// BatchResult is the response a call would have had alone: its status,
// Location and JSON body, and whether it was replayed from the key.
type BatchResult struct {
	Status   int             `json:"status"`
	Location string          `json:"location,omitempty"`
	Replayed bool            `json:"replayed,omitempty"`
	Body     json.RawMessage `json:"body"`
}

// Item is one call of a batch as a [BatchFunc] sees it. The function
// answers it with [Item.Reply] or [Item.Fail].
type Item struct {
	// Request is the call as a POST to its path: its PathValues are set.
	Request *http.Request
	// Body is the call's JSON body.
	Body []byte

	result BatchResult
	set    bool
}

// Reply answers the call with status, a Location (or "") and v as JSON.
func (it *Item) Reply(status int, location string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		it.Fail(fmt.Errorf("encode answer: %w", err))
		return
	}
	it.result, it.set = BatchResult{Status: status, Location: location, Body: b}, true
}

// Fail answers the call with err, as the service's handlers answer
// errors (its code decides the status; an internal error's detail is
// not shown).
func (it *Item) Fail(err error) {
	code, msg := sysops.CodeOf(err), sysops.MessageOf(err)
	if code == sysops.EInternal {
		msg = "internal error"
	}
	b, _ := json.Marshal(httpx.ErrorBody{Error: sysops.Error{Code: code, Message: msg}})
	it.result, it.set = BatchResult{Status: httpx.Status(err), Body: b}, true
}

// Apply answers the call with what fn returns, run in a savepoint of tx
// so that a call refused after it wrote leaves nothing: an error with a
// code (invalid, not found, conflict...) is the answer; any other error
// answers 503, not kept, so that the call is retried. It returns an
// error only if tx itself failed. For calls a BatchFunc handles one by
// one, as alone.
func (it *Item) Apply(ctx context.Context, tx *sql.Tx, fn func() (status int, location string, v any, err error)) error {
	var status int
	var location string
	var v any
	var ferr error
	err := sqldb.Savepoint(ctx, tx, func() error {
		status, location, v, ferr = fn()
		return ferr
	})
	_, broken := errors.AsType[*sqldb.SavepointError](err)
	switch {
	case broken:
		return err
	case err == nil:
		it.Reply(status, location, v)
	case sysops.CodeOf(ferr) == sysops.EInternal:
		// Its detail stays here: it may name the database's insides.
		it.Fail(sysops.Errorf(sysops.EUnavailable, "the call failed on an internal error; retry it"))
	default:
		it.Fail(ferr)
	}
	return nil
}

// Answer answers the call with what fn returns, for a call that refuses
// only before it writes (so needs no savepoint, see [Item.Apply]): an
// error with a code is the answer; any other error is returned, and
// fails the batch.
func (it *Item) Answer(fn func() (status int, location string, v any, err error)) error {
	status, location, v, err := fn()
	switch {
	case err == nil:
		it.Reply(status, location, v)
	case sysops.CodeOf(err) == sysops.EInternal:
		return err
	default:
		it.Fail(err)
	}
	return nil
}

// OneByOne is a BatchFunc for a route whose calls are applied one at a
// time, as alone, but in one transaction, which saves a transaction's
// round trips and an HTTP request per call. key names what a call
// locks; the calls are applied in key order, so that batches touching
// the same rows take their locks in one order instead of deadlocking.
// With lockKeys the keys are also taken first, in one statement, as
// [sqldb.LockKey] locks. apply answers each call through [Item.Answer],
// so it must refuse only before it writes.
func OneByOne(key func(it *Item) string, lockKeys bool,
	apply func(ctx context.Context, tx *sql.Tx, it *Item) (status int, location string, v any, err error)) BatchFunc {
	return func(ctx context.Context, tx *sql.Tx, items []*Item) error {
		if lockKeys {
			var err error
			if items, _, err = InKeyOrder(ctx, tx, items, key, ""); err != nil {
				return err
			}
		} else {
			items = slices.Clone(items)
			slices.SortStableFunc(items, func(a, b *Item) int { return strings.Compare(key(a), key(b)) })
		}
		for _, it := range items {
			if err := it.Answer(func() (int, string, any, error) { return apply(ctx, tx, it) }); err != nil {
				return err
			}
		}
		return nil
	}
}

// InKeyOrder sorts a batch's items by key(it) and takes the locks of their
// distinct keys, prefix+key, in one statement ([sqldb.LockKeys]), in that
// order: batches that touch the same keys then wait for each other instead
// of deadlocking. It returns the items in key order and the distinct keys.
func InKeyOrder(ctx context.Context, tx *sql.Tx, items []*Item, key func(it *Item) string, prefix string) ([]*Item, []string, error) {
	items = slices.Clone(items)
	keys := make(map[*Item]string, len(items))
	for _, it := range items {
		keys[it] = key(it)
	}
	slices.SortStableFunc(items, func(a, b *Item) int { return strings.Compare(keys[a], keys[b]) })
	var distinct, locks []string
	for _, it := range items {
		if k := keys[it]; len(distinct) == 0 || distinct[len(distinct)-1] != k {
			distinct = append(distinct, k)
			locks = append(locks, prefix+k)
		}
	}
	return items, distinct, sqldb.LockKeys(ctx, tx, locks)
}

// BatchFunc applies calls of one route in tx, the transaction in which
// their keys were claimed and their responses are stored, and answers
// each. A call answered with a status of 400 or more must have left no
// effect in tx (the others' effects commit). An error (or a panic) fails
// the whole transaction: nothing commits, and it is run again if the
// error is a transient conflict. Otherwise, while the database answers,
// each call is applied again alone, in its own transaction, so that a
// call whose input sets the error off fails alone (503, or 500 for a
// panic) and the others take effect; with the database down, every call
// gets 503.
type BatchFunc func(ctx context.Context, tx *sql.Tx, items []*Item) error

// BatchHandler serves POST /batch for the routes given ("POST
// /tickets/{id}/status", say): each call's key is claimed as a single
// request's would be (a call repeated later alone, or in another batch,
// gets the same response, and a key reused for another request gets
// 422), the calls whose keys are new are applied by their route's
// BatchFunc, and the keys and responses commit with the effects, in one
// transaction. A call to a path that no route matches gets 404, one
// without a valid key 400; other calls are not affected.
func (s *Store) BatchHandler(routes map[string]BatchFunc) http.Handler {
	// The mux routes each call as it would route the request alone, and
	// hands back the routed request, whose path values it has set.
	mux := http.NewServeMux()
	for pattern := range routes {
		mux.Handle(pattern, http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			if h, ok := r.Context().Value(routedKey{}).(*routed); ok {
				h.req, h.pattern = r, pattern
			}
		}))
	}
	return httpx.Handle(s.cfg.Logger, func(w http.ResponseWriter, r *http.Request) error {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			return sysops.Errorf(sysops.EInvalid, "method %s is not allowed on %s (allowed: POST)", r.Method, r.URL.Path)
		}
		var in BatchRequest
		if err := httpx.DecodeJSON(w, r, &in); err != nil {
			return err
		}
		if len(in.Calls) == 0 || len(in.Calls) > MaxBatchCalls {
			return sysops.Errorf(sysops.EInvalid, "field \"calls\": a batch carries 1 to %d calls (got %d)", MaxBatchCalls, len(in.Calls))
		}
		items := make([]*Item, len(in.Calls))
		route := make([]string, len(in.Calls))
		for i, c := range in.Calls {
			items[i] = &Item{Body: c.Body}
			if err := checkKey(c.Key); err != nil {
				items[i].Fail(sysops.Errorf(sysops.EInvalid, "call %d: %s", i, sysops.MessageOf(err)))
				continue
			}
			h := &routed{}
			req, err := http.NewRequestWithContext(context.WithValue(r.Context(), routedKey{}, h), http.MethodPost, c.Path, bytes.NewReader(c.Body))
			if err != nil || !strings.HasPrefix(c.Path, "/") {
				items[i].Fail(sysops.Errorf(sysops.EInvalid, "call %d: path %q is not a path", i, c.Path))
				continue
			}
			req.Header = r.Header.Clone()
			mux.ServeHTTP(discard{}, req)
			if h.req == nil {
				items[i].Fail(sysops.Errorf(sysops.ENotFound, "call %d: POST %s cannot be batched here", i, req.URL.Path))
				continue
			}
			items[i].Request, route[i] = h.req.WithContext(r.Context()), h.pattern
		}
		s.syncClock(context.WithoutCancel(r.Context()))
		s.runBatch(r.Context(), in.Calls, items, route, routes)
		out := BatchResponse{Results: make([]BatchResult, len(items))}
		for i, it := range items {
			out.Results[i] = it.result
		}
		httpx.WriteJSON(w, http.StatusOK, out)
		return nil
	})
}

// routed receives the request the mux routed, and its pattern.
type routed struct {
	req     *http.Request
	pattern string
}

type routedKey struct{}

type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}

// runBatch answers every item not answered yet.
func (s *Store) runBatch(ctx context.Context, calls []BatchCall, items []*Item, route []string, routes map[string]BatchFunc) {
	ctx = context.WithoutCancel(ctx)
	hashes := make([]string, len(calls))
	first := map[string]int{} // key -> the call that claims it
	var todo []int
	for i, c := range calls {
		if items[i].set {
			continue
		}
		sum := sha256.Sum256(append([]byte(http.MethodPost+" "+items[i].Request.URL.RequestURI()+"\n"), c.Body...))
		hashes[i] = hex.EncodeToString(sum[:])
		if _, dup := first[c.Key]; dup {
			continue // answered as its first call, below
		}
		first[c.Key] = i
		todo = append(todo, i)
	}
	if len(todo) == 0 {
		return // every call was answered already (a bad key or path)
	}
	err := s.applyBatch(ctx, calls, hashes, items, todo, route, routes)
	switch {
	case err == nil:
	case len(todo) > 1 && !sqldb.IsUnavailable(err) && s.db.PingContext(ctx) == nil:
		// The database answers and takes writes, so one call may be what
		// failed the batch (an input that breaks a constraint, a bug it sets off):
		// apply each alone, so that it fails alone instead of failing
		// every call it shares a batch with, at each of their retries.
		s.cfg.Logger.WarnContext(ctx, "idempotency: batch failed; applying its calls one at a time", "calls", len(todo), "error", err)
		for _, i := range todo {
			if err := s.applyBatch(ctx, calls, hashes, items, []int{i}, route, routes); err != nil {
				s.cfg.Logger.WarnContext(ctx, "idempotency: batched call failed", "key", calls[i].Key, "path", calls[i].Path, "error", err)
				items[i].Fail(batchFailure(err))
			}
		}
	default:
		s.cfg.Logger.WarnContext(ctx, "idempotency: batch failed", "calls", len(todo), "error", err)
		for _, i := range todo {
			items[i].Fail(batchFailure(err))
		}
	}
	// A key repeated within the batch gets its first call's answer, or
	// 422 if it came with another request.
	for i, c := range calls {
		j, ok := first[c.Key]
		if items[i].set || !ok || j == i {
			continue
		}
		if hashes[i] != hashes[j] {
			items[i].Fail(sysops.Errorf(sysops.EInvalid, "%s %q was already used for a different request", Header, c.Key))
			items[i].result.Status = http.StatusUnprocessableEntity
			continue
		}
		items[i].result, items[i].set = items[j].result, true
		items[i].result.Replayed = true
	}
}

// applyBatch runs the calls todo in one transaction, again while it fails
// with a transient conflict. A panic in a route's function is an error
// here (errPanic): the transaction is rolled back.
func (s *Store) applyBatch(ctx context.Context, calls []BatchCall, hashes []string, items []*Item, todo []int,
	route []string, routes map[string]BatchFunc) (err error) {
	for attempt := 1; attempt <= maxScopeAttempts; attempt++ {
		for _, i := range todo {
			items[i].set = false
		}
		err = func() (err error) {
			defer func() {
				if p := recover(); p != nil {
					err = fmt.Errorf("%w: %v", errPanic, p)
					s.cfg.Logger.ErrorContext(ctx, "idempotency: batch function panicked", "calls", len(todo), "panic", p,
						"stack", string(debug.Stack()))
				}
			}()
			return sqldb.RunInTx(ctx, s.db, func(tx *sql.Tx) error {
				return s.batchTx(ctx, tx, calls, hashes, items, todo, route, routes)
			})
		}()
		if err == nil || !sqldb.IsRetryable(err) {
			break
		}
	}
	return err
}

// errPanic marks a batch whose function panicked.
var errPanic = errors.New("panic")

// batchFailure is what a call of a failed batch is answered: 500 if its
// route's function panicked (a bug), else 503; either way nothing of it
// was kept, so a retry runs it again.
func batchFailure(err error) error {
	if errors.Is(err, errPanic) {
		return sysops.Errorf(sysops.EInternal, "the call failed (logged by the service)")
	}
	return sysops.Errorf(sysops.EUnavailable, "the batch failed (logged by the service); retry the call")
}

// batchTx claims the keys of todo, replays the calls whose keys exist,
// applies the others, and stores their responses.
func (s *Store) batchTx(ctx context.Context, tx *sql.Tx, calls []BatchCall, hashes []string, items []*Item, todo []int,
	route []string, routes map[string]BatchFunc) error {
	// Claim in key order, so that batches sharing keys wait for each other
	// instead of deadlocking.
	order := slices.Clone(todo)
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(calls[a].Key, calls[b].Key) })
	values, args := sqldb.Rows(1, "(?, ?, $1, 0)", len(order), func(n int) []any { return []any{calls[order[n]].Key, hashes[order[n]]} })
	rows, err := tx.QueryContext(ctx, `INSERT INTO idempotency_key (idem_key, request_hash, created_at, locked_until) VALUES `+values+`
		ON CONFLICT (idem_key) DO NOTHING RETURNING idem_key`, append([]any{s.now().UnixMicro()}, args...)...)
	if err != nil {
		return fmt.Errorf("claim keys: %w", err)
	}
	claimed := map[string]bool{}
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			rows.Close()
			return err
		}
		claimed[k] = true
	}
	if err := rows.Close(); err != nil {
		return err
	}
	if err := rows.Err(); err != nil {
		return err
	}

	// Keys that exist: answered as they were (the claim waited for any
	// transaction that held them).
	var known []int
	for _, i := range todo {
		if !claimed[calls[i].Key] {
			known = append(known, i)
		}
	}
	if len(known) > 0 {
		if err := s.replayBatch(ctx, tx, calls, hashes, items, known); err != nil {
			return err
		}
	}

	// Apply the new calls, route by route.
	byRoute := map[string][]*Item{}
	var patterns []string
	for _, i := range todo {
		if claimed[calls[i].Key] {
			if _, ok := byRoute[route[i]]; !ok {
				patterns = append(patterns, route[i])
			}
			byRoute[route[i]] = append(byRoute[route[i]], items[i])
		}
	}
	slices.Sort(patterns)
	for _, p := range patterns {
		if err := routes[p](ctx, tx, byRoute[p]); err != nil {
			return err
		}
	}

	// Store the answers; a 5xx is not kept (a retry runs the call again).
	var store, forget []int
	for _, i := range todo {
		if !claimed[calls[i].Key] {
			continue
		}
		if !items[i].set {
			items[i].Fail(fmt.Errorf("no answer for POST %s", calls[i].Path))
		}
		if items[i].result.Status >= 500 {
			forget = append(forget, i)
		} else {
			store = append(store, i)
		}
	}
	if len(forget) > 0 {
		list, args := sqldb.Rows(0, "?", len(forget), func(n int) []any { return []any{calls[forget[n]].Key} })
		if _, err := tx.ExecContext(ctx, `DELETE FROM idempotency_key WHERE idem_key IN (`+list+`)`, args...); err != nil {
			return fmt.Errorf("forget keys: %w", err)
		}
	}
	return s.respondBatch(ctx, tx, calls, items, store)
}

// replayBatch answers the calls whose keys exist from what is stored.
func (s *Store) replayBatch(ctx context.Context, tx *sql.Tx, calls []BatchCall, hashes []string, items []*Item, known []int) error {
	list, args := sqldb.Rows(0, "?", len(known), func(n int) []any { return []any{calls[known[n]].Key} })
	rows, err := tx.QueryContext(ctx, `SELECT idem_key, request_hash, status, content_type, location, body, locked_until
		FROM idempotency_key WHERE idem_key IN (`+list+`)`, args...)
	if err != nil {
		return fmt.Errorf("read keys: %w", err)
	}
	stored := map[string]entry{}
	for rows.Next() {
		var k string
		var e entry
		if err := rows.Scan(&k, &e.hash, &e.status, &e.contentType, &e.location, &e.body, &e.lockedUntil); err != nil {
			rows.Close()
			return err
		}
		stored[k] = e
	}
	if err := rows.Close(); err != nil {
		return err
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, i := range known {
		e, ok := stored[calls[i].Key]
		switch {
		case !ok:
			// Claimed by a transaction that rolled back after this one
			// looked: the caller's retry claims it.
			items[i].Fail(sysops.Errorf(sysops.EUnavailable, "%s %q is being released; retry", Header, calls[i].Key))
		case e.hash != hashes[i]:
			items[i].Fail(sysops.Errorf(sysops.EInvalid, "%s %q was already used for a different request", Header, calls[i].Key))
			items[i].result.Status = http.StatusUnprocessableEntity
		case e.status == 0:
			items[i].Fail(sysops.Errorf(sysops.EUnavailable, "a request with %s %q is still in progress; retry later", Header, calls[i].Key))
		default:
			items[i].result = BatchResult{Status: e.status, Location: e.location, Replayed: true, Body: json.RawMessage(e.body)}
			if !json.Valid(items[i].result.Body) {
				b, _ := json.Marshal(e.body)
				items[i].result.Body = b
			}
			items[i].set = true
		}
	}
	return nil
}

// respondBatch stores the answers of the calls in store in their claimed
// keys: on PostgreSQL in one statement sent with the COMMIT.
func (s *Store) respondBatch(ctx context.Context, tx *sql.Tx, calls []BatchCall, items []*Item, store []int) error {
	if len(store) == 0 {
		return nil
	}
	if s.db.Dialect() != sqldb.Postgres {
		for _, i := range store {
			r := items[i].result
			if _, err := tx.ExecContext(ctx, respondSQL, calls[i].Key, r.Status, "application/json", r.Location, string(r.Body)+"\n"); err != nil {
				return fmt.Errorf("store answer: %w", err)
			}
		}
		return nil
	}
	values, args := sqldb.Rows(0, "(CAST(? AS TEXT), CAST(? AS INTEGER), CAST(? AS TEXT), CAST(? AS TEXT))", len(store), func(n int) []any {
		r := items[store[n]].result
		return []any{calls[store[n]].Key, r.Status, r.Location, string(r.Body) + "\n"}
	})
	q := `UPDATE idempotency_key SET status = v.status, content_type = 'application/json', location = v.location, body = v.body
		FROM (VALUES ` + values + `) v (idem_key, status, location, body) WHERE idempotency_key.idem_key = v.idem_key`
	if sqldb.ExecAtCommit(tx, q, args...) {
		return nil
	}
	_, err := tx.ExecContext(ctx, q, args...)
	return err
}

// checkKey checks an Idempotency-Key as a request header would be.
func checkKey(key string) error {
	if key == "" {
		return sysops.Errorf(sysops.EInvalid, "field \"key\" (the call's %s) is required", Header)
	}
	if len(key) > MaxKeyLength {
		return sysops.Errorf(sysops.EInvalid, "%s is longer than %d characters", Header, MaxKeyLength)
	}
	for _, c := range key {
		if c < 0x21 || c > 0x7e {
			return sysops.Errorf(sysops.EInvalid, "%s must be printable ASCII without spaces", Header)
		}
	}
	return nil
}
