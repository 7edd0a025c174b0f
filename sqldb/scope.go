package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// A Scope is one transaction shared by several pieces of work that must
// commit together, whoever runs them: typically an HTTP request's business
// writes and the record of the request's response (see package
// idempotency). Work joins it with [RunInScope]; the owner of the scope
// then commits it, adding its own statements, with [Scope.Commit], or
// discards it with [Scope.Rollback].
//
// Joining is explicit: [RunInTx] never joins a scope, so a helper that
// needs its own transaction (a cache refresh, say) keeps it. But once the
// scope's transaction has begun, the statements run through db with the
// scope's context ([DB.ExecContext], [DB.QueryContext],
// [DB.QueryRowContext]) run in it: the work reads its own writes, and on
// SQLite does not wait for the writer the scope holds.
type Scope struct {
	db    *DB
	mu    sync.Mutex // guards the fields below, and serializes the work
	tx    *sql.Tx
	open  atomic.Pointer[sql.Tx] // tx while it is open, read without mu
	hooks *txHooks
	err   error // the first error of work run in the scope; it must roll back
}

// scopeTx returns the open transaction of the scope ctx carries for db.
func scopeTx(ctx context.Context, db *DB) *sql.Tx {
	if s, _ := ctx.Value(scopeKey{}).(*Scope); s != nil && s.db == db {
		return s.open.Load()
	}
	return nil
}

type scopeKey struct{}

// WithScope returns a context carrying a new scope on db. The scope's
// transaction begins when work first joins it.
func WithScope(ctx context.Context, db *DB) (context.Context, *Scope) {
	s := &Scope{db: db}
	return context.WithValue(ctx, scopeKey{}, s), s
}

// RunInScope runs fn in the transaction of the scope that ctx carries for
// db, beginning it if need be, and leaves it open for the scope's owner
// to commit. Without such a scope it is [RunInTx]. In a scope, an error
// from fn (or a panic) spoils the whole scope: the owner must roll it
// back, and later work in the scope fails at once with the same error.
// Retryable errors are not retried in a scope; the owner may run its whole
// work again (see [IsRetryable]). Work in one scope runs one piece at a
// time: fn must not call RunInScope itself (it would wait for itself).
func RunInScope(ctx context.Context, db *DB, fn func(tx *sql.Tx) error) error {
	s, _ := ctx.Value(scopeKey{}).(*Scope)
	if s == nil || s.db != db {
		return RunInTx(ctx, db, fn)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	if s.tx == nil {
		// The transaction outlives a cancelled request context; the
		// owner ends it either way.
		tx, hooks, err := db.begin(context.WithoutCancel(ctx))
		if err != nil {
			s.err = err
			return s.err
		}
		s.tx, s.hooks = tx, hooks
		s.open.Store(tx)
	}
	ok := false
	defer func() {
		if !ok && s.err == nil {
			s.err = errors.New("sqldb: work in the scope panicked")
		}
	}()
	if err := fn(s.tx); err != nil {
		s.err = err
		return err
	}
	ok = true
	return nil
}

// Active reports whether work has joined the scope (its transaction has
// begun).
func (s *Scope) Active() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tx != nil
}

// Err returns the error that spoiled the scope, if any.
func (s *Scope) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Commit runs fn in the scope's transaction (beginning it if no work
// joined) and commits, then runs the hooks registered with
// [AfterCommit]. A spoiled scope is rolled back and its error returned.
// Either way the scope is over.
func (s *Scope) Commit(ctx context.Context, fn func(tx *sql.Tx) error) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		s.rollback()
		return s.err
	}
	if s.tx == nil {
		tx, hooks, err := s.db.begin(context.WithoutCancel(ctx))
		if err != nil {
			return err
		}
		s.tx, s.hooks = tx, hooks
	}
	tx, hooks := s.tx, s.hooks
	defer commitHooks.Delete(tx)
	s.tx, s.err = nil, errors.New("sqldb: scope already ended")
	s.open.Store(nil)
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	for _, f := range hooks.fns {
		f(s.db)
	}
	return nil
}

// Rollback discards the scope's transaction, if it began. The scope is
// over.
func (s *Scope) Rollback() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rollback()
	if s.err == nil {
		s.err = errors.New("sqldb: scope already ended")
	}
}

func (s *Scope) rollback() {
	if s.tx != nil {
		s.open.Store(nil)
		_ = s.tx.Rollback()
		commitHooks.Delete(s.tx)
		s.tx = nil
	}
}
