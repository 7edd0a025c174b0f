// Package idempotency makes HTTP POSTs safe to repeat: a request that
// carries an Idempotency-Key header runs once, and every repeat with the
// same key gets the first response back, byte for byte, without running
// the handler again.
//
// The keys live in the service's own database (table idempotency_key, see
// [Migrations]). A key is reserved before the handler runs, so two
// concurrent requests with one key do not both run: the second gets 409
// until the first finishes. A key reused with a different request (method,
// path or body) gets 422. A response with a 5xx status is not kept — the
// reservation is released so that a retry runs the handler again; neither
// is a reservation whose process died: a running request renews its
// reservation, and one no longer renewed expires after [Config.LockTTL].
// Expiry goes by the database's clock ([sqldb.Clock]), so instances of a
// service on machines whose clocks drift apart agree on it.
//
// A key is remembered for [Config.Retention] (24 hours by default); [Store.Prune]
// forgets older ones.
//
// # Transactional keys
//
// In the default mode above, the key, the handler's transaction and the
// stored response are three commits: a process killed between the
// handler's commit and the storing of its response leaves an effect
// without a key, and a repeat (once the reservation expires) applies it
// again. With [Config.Transactional], for services whose handlers run
// their writes with [sqldb.RunInScope], the middleware instead runs the
// handler in a request-scoped transaction, buffers its response, and
// commits the key and the response in that same transaction: effect and
// key are one commit, so that window is gone, and two commits per request
// are saved. On PostgreSQL the request's transaction claims the key with
// its first statement, sent with its BEGIN, and writes the response into
// it with its COMMIT ([sqldb.ExecAtCommit]): the key costs no round trip
// of its own. A repeat that arrives while the first is in flight waits on
// that claim, without running the handler, and then gets the first
// response, instead of 409. On SQLite the key is looked up before the
// transaction (so as not to hold the single writer longer) and stored
// with the response; a repeat racing the first there runs the handler,
// loses at the key, and its effects roll back. A 5xx answer rolls the
// effects back (a retry runs the handler again); a handler whose
// transaction failed has its 4xx answer kept with no effect; a transient
// conflict (serialization failure, deadlock, busy SQLite) runs the
// handler again, up to five times.
//
// # Batches
//
// [Store.BatchHandler] serves POST /batch: several POSTs, each with its
// own key, path and body, applied in one transaction — one round trip
// and one commit for all of them instead of one each, and, for routes
// whose [BatchFunc] applies its calls with set-based statements, one
// statement for all of them. Each call is keyed exactly as the same
// request alone: its key is claimed in the batch's transaction (all the
// batch's new keys in one statement), its response is stored with the
// COMMIT, a repeat alone or in another batch gets the stored response,
// and a key reused for another request gets 422. A call refused (4xx)
// leaves no effect and keeps its answer; a 5xx is not kept, so the call
// runs again when retried. A batch whose function fails commits nothing
// and answers 503 for each of its calls. The saga orchestrator sends the
// calls of many sagas' steps this way (see saga.Step.ActionBatch).
package idempotency

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/internal/httpx"
	"github.com/sysops-squad/sysops/sqldb"
)

// Header is the request header that carries the key.
const Header = "Idempotency-Key"

// ReplayedHeader is set to "true" on a response replayed from the store.
const ReplayedHeader = "Idempotent-Replayed"

// MigrationSet names the package's migrations in a service's database.
const MigrationSet = "idempotency"

// MaxKeyLength is the longest key accepted.
const MaxKeyLength = 255

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations returns the schema of the idempotency_key table.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the embedded directory is part of the binary
	}
	return sub
}

// Config configures a [Store].
type Config struct {
	// LockTTL is how long a reservation holds unless renewed. The request
	// that holds it renews it every LockTTL/3 while it runs (for at most a
	// minute), so a repeat takes over only the reservation of a process
	// that died — within LockTTL of its death. Default 5 seconds.
	LockTTL time.Duration
	// Retention is how long a finished key is remembered. Default 24 hours.
	Retention time.Duration
	// Transactional records each key in the same transaction as the
	// request's business writes, which the handlers must run with
	// sqldb.RunInScope: the effects and the stored response commit
	// together or not at all, so no crash can leave an effect without its
	// key (a repeat would apply it again) or a key without its effect. A
	// concurrent repeat waits on the key's unique index and then gets the
	// first response. The handler's response is buffered until the commit.
	Transactional bool
	// Clock is the time reservations go by: the database's, so that
	// instances of a service on machines whose clocks drift apart agree
	// on when one expires, and none takes over a live one. Default: one
	// of the store's own, measured against its database.
	Clock  *sqldb.Clock
	Logger *slog.Logger
}

// Store keeps the keys of one service's database.
type Store struct {
	db  *sqldb.DB
	cfg Config
}

// syncClock measures the offset to the database's clock again if it is
// older than sqldb.ClockSyncEvery (a request's first step, before it
// holds a connection: the measure takes one). A failed measure keeps
// the last offset; the statements that follow fail the same way.
func (s *Store) syncClock(ctx context.Context) { _ = s.cfg.Clock.Sync(ctx, s.db) }

// now is the database's time, as last measured.
func (s *Store) now() time.Time { return s.cfg.Clock.Now() }

// New returns a store over db, whose idempotency_key table exists.
func New(db *sqldb.DB, cfg Config) *Store {
	if cfg.LockTTL <= 0 {
		cfg.LockTTL = 5 * time.Second
	}
	if cfg.Retention <= 0 {
		cfg.Retention = 24 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = &sqldb.Clock{}
	}
	return &Store{db: db, cfg: cfg}
}

// Middleware runs next once per Idempotency-Key on POST requests; other
// methods, and POSTs without the header, pass straight through.
func (s *Store) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get(Header)
		if r.Method != http.MethodPost || key == "" {
			next.ServeHTTP(w, r)
			return
		}
		if err := s.serve(w, r, key, next); err != nil {
			httpx.WriteError(w, r, s.cfg.Logger, err)
		}
	})
}

func (s *Store) serve(w http.ResponseWriter, r *http.Request, key string, next http.Handler) error {
	if len(key) > MaxKeyLength {
		return sysops.Errorf(sysops.EInvalid, "header %s is longer than %d characters", Header, MaxKeyLength)
	}
	for _, c := range key {
		if c < 0x21 || c > 0x7e {
			return sysops.Errorf(sysops.EInvalid, "header %s must be printable ASCII without spaces", Header)
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, httpx.MaxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return sysops.Errorf(sysops.EInvalid, "request body exceeds %d bytes", httpx.MaxBodyBytes)
		}
		return sysops.Errorf(sysops.EInvalid, "read request body: %v", err)
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	sum := sha256.Sum256(append([]byte(r.Method+" "+r.URL.RequestURI()+"\n"), body...))
	hash := hex.EncodeToString(sum[:])
	s.syncClock(context.WithoutCancel(r.Context()))

	if s.cfg.Transactional {
		return s.serveInScope(w, r, key, hash, body, next)
	}

	// The reservation must not be abandoned half-way by a client that
	// hangs up: it is made, and released or completed, whatever happens to
	// the request.
	ctx := context.WithoutCancel(r.Context())
	prev, reserved, until, err := s.reserve(ctx, key, hash)
	if err != nil {
		return err
	}
	if !reserved {
		return replay(w, key, hash, prev)
	}

	rec := &recorder{ResponseWriter: w, status: http.StatusOK}
	completed := false
	stopHold := s.hold(ctx, key, until)
	defer func() {
		if !completed { // the handler panicked: release the key
			stopHold()
			s.release(context.WithoutCancel(ctx), key)
		}
	}()
	next.ServeHTTP(rec, r)
	completed = true
	stopHold()
	if rec.status >= 500 {
		s.release(context.WithoutCancel(ctx), key)
		return nil
	}
	_, err = s.db.ExecContext(context.WithoutCancel(ctx), `UPDATE idempotency_key SET status = $1, content_type = $2,
		location = $3, body = $4 WHERE idem_key = $5`,
		rec.status, rec.Header().Get("Content-Type"), rec.Header().Get("Location"), rec.body.String(), key)
	if err != nil {
		s.cfg.Logger.ErrorContext(ctx, "idempotency: keep response", "key", key, "error", err)
	}
	return nil
}

// replay answers a request whose key is known: with the stored response,
// or an error if the key was used for another request or is in progress.
func replay(w http.ResponseWriter, key, hash string, prev entry) error {
	switch {
	case prev.hash != hash:
		httpx.WriteJSON(w, http.StatusUnprocessableEntity, httpx.ErrorBody{Error: sysops.Error{Code: sysops.EInvalid,
			Message: fmt.Sprintf("%s %q was already used for a different request", Header, key)}})
		return nil
	case prev.status == 0:
		// Retry-After marks the conflict as passing: the first request
		// will finish (or its reservation expire).
		w.Header().Set("Retry-After", "1")
		return sysops.Errorf(sysops.EConflict, "a request with %s %q is still in progress; retry later", Header, key)
	}
	if prev.contentType != "" {
		w.Header().Set("Content-Type", prev.contentType)
	}
	if prev.location != "" {
		w.Header().Set("Location", prev.location)
	}
	w.Header().Set(ReplayedHeader, "true")
	w.WriteHeader(prev.status)
	_, _ = io.WriteString(w, prev.body)
	return nil
}

// maxScopeAttempts bounds how often a transactional request is run again
// after its transaction hit a transient conflict.
const maxScopeAttempts = 5

// serveInScope is serve for a Transactional store: the handler's writes,
// run with sqldb.RunInScope, and the key with its response commit in one
// transaction.
func (s *Store) serveInScope(w http.ResponseWriter, r *http.Request, key, hash string, body []byte, next http.Handler) error {
	ctx := context.WithoutCancel(r.Context())
	// On PostgreSQL a new key is claimed by the transaction's first
	// statement, which carries its BEGIN: no round trip of its own to
	// look the key up. SQLite looks it up first, so as not to take the
	// single writer before the handler needs it.
	claim := s.db.Dialect() == sqldb.Postgres
	var prev entry
	var found bool
	if !claim {
		var err error
		if prev, found, err = s.lookup(ctx, key); err != nil {
			return err
		}
	}
	for attempt := 1; ; attempt++ {
		if found && (prev.status != 0 || prev.hash != hash || prev.lockedUntil > s.now().UnixMicro()) {
			return replay(w, key, hash, prev)
		}
		sctx, scope := sqldb.WithScope(r.Context(), s.db)
		claimed := false
		if claim && !found {
			err := sqldb.RunInScope(sctx, s.db, func(tx *sql.Tx) error {
				res, err := tx.ExecContext(ctx, claimKeySQL, key, hash, s.now().UnixMicro())
				if err != nil {
					return err
				}
				n, err := res.RowsAffected()
				claimed = n == 1
				return err
			})
			if err != nil {
				scope.Rollback()
				// The claim is the scope's first statement: a session
				// ended under it committed nothing, so it may run again.
				if (sqldb.IsRetryable(err) || sqldb.IsSessionEnded(err)) && attempt < maxScopeAttempts {
					continue
				}
				return s.unavailable(ctx, "claim the Idempotency-Key", err)
			}
			if !claimed {
				// Stored by a request that committed first (this one
				// waited for it): answer as it did.
				scope.Rollback()
				var err error
				if prev, found, err = s.lookup(ctx, key); err != nil {
					return err
				}
				if !found && attempt >= maxScopeAttempts {
					return sysops.Errorf(sysops.EUnavailable, "idempotency: key %q vanished", key)
				}
				continue
			}
		}
		rec := &buffer{header: http.Header{}, status: http.StatusOK}
		r.Body = io.NopCloser(bytes.NewReader(body))
		func() {
			defer func() {
				if p := recover(); p != nil {
					scope.Rollback()
					panic(p)
				}
			}()
			next.ServeHTTP(rec, r.WithContext(sctx))
		}()
		spoiled := scope.Err()
		if spoiled != nil && sqldb.IsRetryable(spoiled) && attempt < maxScopeAttempts {
			scope.Rollback()
			continue
		}
		if rec.status >= 500 {
			scope.Rollback() // nothing kept: a retry runs the handler again
			rec.flush(w)
			return nil
		}
		var err error
		if spoiled != nil {
			// The handler's transaction failed and it answered (a 4xx):
			// no effect, and the answer is kept for the key.
			scope.Rollback()
			err = s.storeKey(ctx, s.db, key, hash, rec)
		} else {
			err = scope.Commit(ctx, func(tx *sql.Tx) error {
				if claimed {
					// The response goes into the claimed row with the
					// COMMIT.
					args := []any{key, rec.status, rec.header.Get("Content-Type"), rec.header.Get("Location"), rec.body.String()}
					if sqldb.ExecAtCommit(tx, respondSQL, args...) {
						return nil
					}
					_, err := tx.ExecContext(ctx, respondSQL, args...)
					return err
				}
				// SQLite, or an expired reservation: storeKey inserts
				// the key or takes the reservation over (a concurrent
				// request that stored the key first makes it change
				// nothing, or a unique violation, handled below).
				return s.storeKey(ctx, tx, key, hash, rec)
			})
		}
		switch {
		case err == nil:
			rec.flush(w)
			return nil
		case errors.Is(err, errKeyTaken) || sqldb.IsUniqueViolation(err):
			// A concurrent request with this key committed first; its
			// effects stand and ours are rolled back.
			prev, found, lerr := s.lookup(ctx, key)
			if lerr != nil {
				return lerr
			}
			if !found {
				return sysops.Errorf(sysops.EUnavailable, "idempotency: key %q vanished", key)
			}
			return replay(w, key, hash, prev)
		case sqldb.IsRetryable(err) && attempt < maxScopeAttempts:
			continue
		}
		return s.unavailable(ctx, "commit the request", err)
	}
}

// claimKeySQL claims a key that does not exist yet, as the first statement
// of the request's transaction: the row is seen by nobody until the
// transaction commits with the response in it (respondSQL), and a
// concurrent request with the key waits for it, then claims nothing.
const claimKeySQL = `INSERT INTO idempotency_key (idem_key, request_hash, created_at, locked_until)
	VALUES ($1, $2, $3, 0) ON CONFLICT (idem_key) DO NOTHING`

// respondSQL puts the response into a key claimed by claimKeySQL.
const respondSQL = `UPDATE idempotency_key SET status = $2, content_type = $3, location = $4, body = $5 WHERE idem_key = $1`

// insertKeySQL stores a key with its response. It takes over a
// reservation left in progress by the reserve-first mode whose lock has
// expired (its process died); any other existing key is left as it is,
// and the statement changes no row.
const insertKeySQL = `INSERT INTO idempotency_key (idem_key, request_hash, created_at, locked_until, status, content_type,
	location, body) VALUES ($1, $2, $3, 0, $4, $5, $6, $7)
	ON CONFLICT (idem_key) DO UPDATE SET request_hash = excluded.request_hash, created_at = excluded.created_at,
		locked_until = 0, status = excluded.status, content_type = excluded.content_type, location = excluded.location,
		body = excluded.body
	WHERE idempotency_key.status = 0 AND idempotency_key.locked_until < excluded.created_at`

func (s *Store) keyArgs(key, hash string, rec *buffer) []any {
	return []any{key, hash, s.now().UnixMicro(), rec.status, rec.header.Get("Content-Type"), rec.header.Get("Location"),
		rec.body.String()}
}

// errKeyTaken: the key was stored by another request first.
var errKeyTaken = errors.New("idempotency: key taken")

// storeKey runs insertKeySQL on db and reports errKeyTaken when it
// changed no row.
func (s *Store) storeKey(ctx context.Context, db interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}, key, hash string, rec *buffer) error {
	res, err := db.ExecContext(ctx, insertKeySQL, s.keyArgs(key, hash, rec)...)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return errKeyTaken
	}
	return nil
}

// unavailable is the answer to a request whose key the database failed
// to read or write: 503, so that the caller retries, with the database's
// error in the log only.
func (s *Store) unavailable(ctx context.Context, what string, err error) error {
	if ctx.Err() == nil { // a caller that went away is no news
		s.cfg.Logger.WarnContext(ctx, "idempotency: "+what, "error", err)
	}
	return sysops.Errorf(sysops.EUnavailable, "the service's database could not %s just now; retry", what)
}

// lookup reads a key's entry.
func (s *Store) lookup(ctx context.Context, key string) (entry, bool, error) {
	var e entry
	err := s.db.QueryRowContext(ctx, `SELECT request_hash, status, content_type, location, body, locked_until
		FROM idempotency_key WHERE idem_key = $1`, key).Scan(&e.hash, &e.status, &e.contentType, &e.location, &e.body, &e.lockedUntil)
	if errors.Is(err, sql.ErrNoRows) {
		return e, false, nil
	}
	if err != nil {
		return e, false, s.unavailable(ctx, "read the Idempotency-Key", err)
	}
	return e, true, nil
}

// buffer holds a response until the transaction it reports has committed.
type buffer struct {
	header      http.Header
	status      int
	wroteHeader bool
	body        bytes.Buffer
}

func (b *buffer) Header() http.Header { return b.header }

func (b *buffer) WriteHeader(status int) {
	if !b.wroteHeader {
		b.status, b.wroteHeader = status, true
	}
}

func (b *buffer) Write(p []byte) (int, error) {
	b.WriteHeader(http.StatusOK)
	return b.body.Write(p)
}

func (b *buffer) flush(w http.ResponseWriter) {
	for k, v := range b.header {
		w.Header()[k] = v
	}
	w.WriteHeader(b.status)
	_, _ = w.Write(b.body.Bytes())
}

type entry struct {
	hash, contentType, location, body string
	status                            int
	lockedUntil                       int64
}

// reserve inserts the key as in progress, or takes over an expired
// reservation. When it does neither it returns the existing entry.
func (s *Store) reserve(ctx context.Context, key, hash string) (prev entry, reserved bool, until int64, err error) {
	now := s.now()
	until = now.Add(s.cfg.LockTTL).UnixMicro()
	err = sqldb.RunInTx(ctx, s.db, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO idempotency_key (idem_key, request_hash, created_at, locked_until)
			VALUES ($1, $2, $3, $4) ON CONFLICT (idem_key) DO NOTHING`, key, hash, now.UnixMicro(), until)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 1 {
			reserved = true
			return nil
		}
		if err := tx.QueryRowContext(ctx, `SELECT request_hash, status, content_type, location, body, locked_until
			FROM idempotency_key WHERE idem_key = $1`, key).Scan(&prev.hash, &prev.status, &prev.contentType,
			&prev.location, &prev.body, &prev.lockedUntil); err != nil {
			return err
		}
		if prev.hash != hash || prev.status != 0 || prev.lockedUntil > now.UnixMicro() {
			return nil
		}
		res, err = tx.ExecContext(ctx, `UPDATE idempotency_key SET locked_until = $1
			WHERE idem_key = $2 AND status = 0 AND locked_until = $3`, until, key, prev.lockedUntil)
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		reserved = n == 1
		return nil
	})
	if err != nil {
		return prev, false, 0, s.unavailable(ctx, "reserve the Idempotency-Key", err)
	}
	return prev, reserved, until, nil
}

// maxHold bounds how long a running request keeps its key by renewing it:
// a handler hung longer loses the key to a repeat.
const maxHold = time.Minute

// hold keeps the reservation of key, made until the time until (Unix
// microseconds), while its request runs: every LockTTL/3 it moves the
// lock on, so that only the reservation of a process that died, and
// stopped renewing, expires. It renews only its own reservation (the
// lock as it last set it), for at most maxHold. stop ends it, and
// returns once no renewal is in flight.
func (s *Store) hold(ctx context.Context, key string, until int64) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(max(s.cfg.LockTTL/3, time.Millisecond))
		defer t.Stop()
		giveUp := time.Now().Add(maxHold)
		for {
			select {
			case <-done:
				return
			case tick := <-t.C:
				if tick.After(giveUp) {
					return
				}
				s.syncClock(ctx)
				next := s.now().Add(s.cfg.LockTTL).UnixMicro()
				res, err := s.db.ExecContext(ctx, `UPDATE idempotency_key SET locked_until = $1
					WHERE idem_key = $2 AND status = 0 AND locked_until = $3`, next, key, until)
				if err != nil {
					s.cfg.Logger.WarnContext(ctx, "idempotency: renew reservation", "key", key, "error", err)
					continue
				}
				if n, _ := res.RowsAffected(); n == 0 {
					return // finished, or lost to a repeat after renewals failed
				}
				until = next
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

func (s *Store) release(ctx context.Context, key string) {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM idempotency_key WHERE idem_key = $1 AND status = 0`, key); err != nil {
		s.cfg.Logger.ErrorContext(ctx, "idempotency: release key", "key", key, "error", err)
	}
}

// Prune forgets keys older than the retention and returns how many.
func (s *Store) Prune(ctx context.Context) (int64, error) {
	s.syncClock(ctx)
	cutoff := s.now().Add(-s.cfg.Retention).UnixMicro()
	res, err := s.db.ExecContext(ctx, `DELETE FROM idempotency_key WHERE created_at < $1`, cutoff)
	if err != nil {
		return 0, fmt.Errorf("idempotency: prune: %w", err)
	}
	return res.RowsAffected()
}

// RunPruner prunes every interval until ctx ends.
func (s *Store) RunPruner(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := s.Prune(ctx); err != nil && ctx.Err() == nil {
				s.cfg.Logger.WarnContext(ctx, "idempotency: prune", "error", err)
			}
		}
	}
}

// recorder passes a response through while keeping a copy.
type recorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
	body        bytes.Buffer
}

func (r *recorder) WriteHeader(status int) {
	if !r.wroteHeader {
		r.status, r.wroteHeader = status, true
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(b []byte) (int, error) {
	if !r.wroteHeader {
		r.WriteHeader(http.StatusOK)
	}
	r.body.Write(b)
	return r.ResponseWriter.Write(b)
}
