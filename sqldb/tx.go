package sqldb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// maxTxAttempts bounds the re-runs of a transaction that keeps conflicting.
const maxTxAttempts = 10

// RunInTx runs fn inside a transaction on db's writer and commits it if fn
// returns nil. It rolls back if fn returns an error or panics (the panic is
// re-raised after the rollback). When the database reports a
// serialization failure, a deadlock, or a busy or locked SQLite file, the
// whole transaction is re-run with exponential backoff and jitter, up to 10
// attempts, so fn must have no effect outside tx.
//
// A transaction whose session the server ended before its COMMIT was sent
// ([IsSessionEnded]: a restart, a failover, an administrator's
// pg_terminate_backend) did not commit, and is re-run the same way on
// another connection: a pool's connections all die at once then, and the
// first use of each would otherwise fail a request. At the COMMIT itself
// such an error is returned, as the transaction may have committed.
func RunInTx(ctx context.Context, db *DB, fn func(tx *sql.Tx) error) error {
	err := retryConflicts(ctx, func() error { return runOnce(ctx, db, fn) })
	if e, ok := errors.AsType[endedBeforeCommit](err); ok {
		return e.err
	}
	return err
}

// endedBeforeCommit is an error of a transaction whose session ended before
// its COMMIT was sent: it did not commit, and may be run again.
type endedBeforeCommit struct{ err error }

func (e endedBeforeCommit) Error() string { return e.err.Error() }
func (e endedBeforeCommit) Unwrap() error { return e.err }

// IsSessionEnded reports whether err is a PostgreSQL session ending
// under a statement: the server shut down, crashed, starting up, or
// terminated it on an administrator's word (57P01-57P03), a connection
// failure (class 08), or the connection reset or closed (a restart, a
// network cut). Before a transaction's COMMIT was sent, it means that the
// transaction did not commit. A cancelled or expired context is not one.
func IsSessionEnded(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		switch pgErr.Code {
		case "57P01", "57P02", "57P03":
			return true
		}
		return strings.HasPrefix(pgErr.Code, "08")
	}
	if _, ok := errors.AsType[*net.OpError](err); ok {
		return true
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, pgconn.ErrConnClosed)
}

// retryConflicts runs attempt until it succeeds, fails with an error that
// is not [IsRetryable], or has been tried maxTxAttempts times, backing off
// exponentially with jitter in between.
func retryConflicts(ctx context.Context, attempt func() error) error {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 2 * time.Millisecond
	bo.MaxInterval = 200 * time.Millisecond
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		err := attempt()
		if _, ended := errors.AsType[endedBeforeCommit](err); err != nil && !IsRetryable(err) && !ended {
			return struct{}{}, backoff.Permanent(err)
		}
		return struct{}{}, err
	}, backoff.WithBackOff(bo), backoff.WithMaxTries(maxTxAttempts), backoff.WithMaxElapsedTime(0))
	return err
}

// commitHooks holds, for each transaction run by RunInTx, the functions to
// call once it has committed.
var commitHooks sync.Map // *sql.Tx → *txHooks

type txHooks struct {
	db        *DB
	fns       []func(*DB)
	pipelined bool   // the driver sends atCommit with the COMMIT
	atCommit  []Stmt // see ExecAtCommit
	merged    map[any]*mergedStmt
}

// AfterCommit registers fn to be called after tx commits, with the
// database it committed to, if tx is being run by [RunInTx]. A rolled-back
// or retried attempt calls nothing (a retry registers again when fn runs
// again). For a transaction not run by RunInTx it does nothing and reports
// false, so callers must not depend on it for correctness: it is for
// wake-ups, such as telling a relay that there is work.
func AfterCommit(tx *sql.Tx, fn func(db *DB)) bool {
	v, ok := commitHooks.Load(tx)
	if !ok {
		return false
	}
	h := v.(*txHooks)
	h.fns = append(h.fns, fn)
	return true
}

// TxDialect reports the dialect of a transaction run by [RunInTx]; ok is
// false for any other transaction. It lets code that receives only a tx
// use a dialect's faster form where there is one.
func TxDialect(tx *sql.Tx) (d Dialect, ok bool) {
	v, ok := commitHooks.Load(tx)
	if !ok {
		return "", false
	}
	return v.(*txHooks).db.dialect, true
}

func runOnce(ctx context.Context, db *DB, fn func(tx *sql.Tx) error) (err error) {
	tx, hooks, err := db.begin(ctx)
	if err != nil {
		if IsSessionEnded(err) {
			return endedBeforeCommit{err}
		}
		return err
	}
	defer commitHooks.Delete(tx)
	defer func() {
		if p := recover(); p != nil {
			_ = tx.Rollback()
			panic(p)
		}
		if err != nil {
			if rbErr := tx.Rollback(); rbErr != nil && !errors.Is(rbErr, sql.ErrTxDone) {
				err = errors.Join(err, fmt.Errorf("rollback: %w", rbErr))
			}
		}
	}()
	if err = fn(tx); err != nil {
		if IsSessionEnded(err) {
			return endedBeforeCommit{err}
		}
		return err
	}
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	for _, f := range hooks.fns {
		f(db)
	}
	return nil
}

// IsRetryable reports whether err is a transient conflict after which the
// whole transaction may simply be run again: a PostgreSQL serialization
// failure (40001) or deadlock (40P01), SQLITE_BUSY / SQLITE_LOCKED, or a
// pooled connection found dead before the transaction's first statement
// reached the server (driver.ErrBadConn).
func IsRetryable(err error) bool {
	if errors.Is(err, driver.ErrBadConn) {
		return true
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		return pgErr.Code == "40001" || pgErr.Code == "40P01"
	}
	if sqErr, ok := errors.AsType[*sqlite.Error](err); ok {
		switch sqErr.Code() & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
			return true
		}
	}
	return false
}

// IsUniqueViolation reports whether err is a unique or primary key
// constraint violation, in either dialect.
func IsUniqueViolation(err error) bool {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		return pgErr.Code == "23505"
	}
	if sqErr, ok := errors.AsType[*sqlite.Error](err); ok {
		return sqErr.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || sqErr.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// IsDataError reports whether err is the database refusing a value itself
// — PostgreSQL's data exceptions (class 22: a string PostgreSQL's text
// cannot hold, a number out of range, malformed JSON for jsonb), or
// SQLite's datatype mismatch — so that running the same statement again
// cannot succeed.
func IsDataError(err error) bool {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		return strings.HasPrefix(pgErr.Code, "22")
	}
	if sqErr, ok := errors.AsType[*sqlite.Error](err); ok {
		return sqErr.Code()&0xff == sqlite3.SQLITE_MISMATCH
	}
	return false
}

// IsUnavailable reports whether err is the database refusing work for a
// state of its own, not for what was asked of it, so that the same work
// may succeed once that state passes: PostgreSQL in read-only mode (25006:
// a standby, or a primary demoted during a failover), out of disk (53100)
// or connection slots (53300), an I/O error (58030), a session that ended
// under a statement ([IsSessionEnded]) or a connection refused; SQLite
// unable to write its file (SQLITE_READONLY: a file system remounted
// read-only, say), out of disk (SQLITE_FULL), or an I/O error
// (SQLITE_IOERR, SQLITE_CANTOPEN). A request that fails so deserves a
// 503, and a message whose handling fails so is not at fault.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		switch pgErr.Code {
		case "25006", "53100", "53300", "58030":
			return true
		}
		return IsSessionEnded(err)
	}
	if sqErr, ok := errors.AsType[*sqlite.Error](err); ok {
		switch sqErr.Code() & 0xff {
		case sqlite3.SQLITE_READONLY, sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN:
			return true
		}
		return false
	}
	if _, ok := errors.AsType[*pgconn.ConnectError](err); ok {
		return true
	}
	return IsSessionEnded(err) || errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone)
}

// LockKey serializes the transactions that lock the same key until they
// end — for guarding the absence of a row (create-if-not-tombstoned, say),
// which no row lock can. On PostgreSQL it takes a transaction-scoped
// advisory lock; SQLite transactions run by [RunInTx] are serialized
// already, so there it does nothing. tx must be run by [RunInTx].
func LockKey(ctx context.Context, tx *sql.Tx, key string) error {
	d, ok := TxDialect(tx)
	if !ok {
		return errors.New("sqldb: LockKey needs a transaction run by RunInTx")
	}
	if d != Postgres {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, key); err != nil {
		return fmt.Errorf("sqldb: lock key %q: %w", key, err)
	}
	return nil
}

// LockKeys is [LockKey] for several keys in one statement. It takes them
// in sorted order, so that transactions locking overlapping sets wait
// for each other instead of deadlocking.
func LockKeys(ctx context.Context, tx *sql.Tx, keys []string) error {
	d, ok := TxDialect(tx)
	if !ok {
		return errors.New("sqldb: LockKeys needs a transaction run by RunInTx")
	}
	if d != Postgres || len(keys) == 0 {
		return nil
	}
	sorted := slices.Clone(keys)
	slices.Sort(sorted)
	if _, err := tx.ExecContext(ctx, `SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0)))
		FROM (SELECT k FROM unnest(CAST($1 AS TEXT[])) AS k ORDER BY k) s`, sorted); err != nil {
		return fmt.Errorf("sqldb: lock %d keys: %w", len(keys), err)
	}
	return nil
}

// Savepoint runs fn inside a savepoint of tx: if fn fails, what it wrote
// is undone, with what it queued for the commit, and tx goes on as before
// fn (on PostgreSQL, even after a failed statement). It returns fn's
// error, or a [*SavepointError] if the savepoint itself failed.
// For one piece of work among several sharing a transaction (a call of a
// batch, say) that must leave nothing when it fails.
func Savepoint(ctx context.Context, tx *sql.Tx, fn func() error) error {
	if _, err := tx.ExecContext(ctx, `SAVEPOINT sqldb_piece`); err != nil {
		return &SavepointError{fmt.Errorf("sqldb: savepoint: %w", err)}
	}
	restore := func() {}
	if v, ok := commitHooks.Load(tx); ok {
		// What fn queues for the commit (ExecAtCommit, AfterCommit) goes
		// with what it wrote.
		h := v.(*txHooks)
		nAt, nFns, nMerged := len(h.atCommit), len(h.fns), map[any]int{}
		for k, m := range h.merged {
			nMerged[k] = len(m.items)
		}
		restore = func() {
			h.atCommit, h.fns = h.atCommit[:nAt], h.fns[:nFns]
			for k, m := range h.merged {
				if n, ok := nMerged[k]; ok {
					m.items = m.items[:n]
				} else {
					delete(h.merged, k)
				}
			}
		}
	}
	if ferr := fn(); ferr != nil {
		restore()
		if _, err := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT sqldb_piece`); err != nil {
			return errors.Join(ferr, &SavepointError{fmt.Errorf("sqldb: roll back to savepoint: %w", err)})
		}
		if _, err := tx.ExecContext(ctx, `RELEASE SAVEPOINT sqldb_piece`); err != nil {
			return errors.Join(ferr, &SavepointError{fmt.Errorf("sqldb: release savepoint: %w", err)})
		}
		return ferr
	}
	if _, err := tx.ExecContext(ctx, `RELEASE SAVEPOINT sqldb_piece`); err != nil {
		return &SavepointError{fmt.Errorf("sqldb: release savepoint: %w", err)}
	}
	return nil
}

// SavepointError is a failure of [Savepoint] itself, not of its work:
// the transaction cannot go on.
type SavepointError struct{ Err error }

func (e *SavepointError) Error() string { return e.Err.Error() }
func (e *SavepointError) Unwrap() error { return e.Err }

// PlanPerCall, passed as the first argument of a PostgreSQL query, has
// the server plan the query with its actual arguments at every call
// instead of caching a generic plan on the connection. Use it for a query
// whose best plan depends on its arguments, such as a join with an array
// argument of any length: a generic plan built while a table was small
// can scan the whole table per array element for as long as the
// connection lives. Not for SQLite.
var PlanPerCall any = pgx.QueryExecModeCacheDescribe
