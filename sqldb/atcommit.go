package sqldb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// Statements sent with COMMIT. A statement a transaction must run but
// whose result it does not read (an outbox insert, say) costs a round
// trip of its own; on PostgreSQL it can instead travel with the COMMIT, in
// one pipeline. For a short transaction that is a quarter of its round
// trips.
//
// The PostgreSQL pool's connections are pgx's, wrapped so that a
// transaction begun by [RunInTx] or a [Scope] knows its queued statements
// and sends them ahead of its COMMIT.

// ExecAtCommit queues query to run at the end of tx, sent with its COMMIT
// in one round trip, and reports true; if the statement fails the commit
// fails with its error and the transaction rolls back (the error is what
// [RunInTx] or [Scope.Commit] returns). It reports false, queuing nothing,
// when tx cannot do this: a transaction not begun by RunInTx or a Scope,
// or not on PostgreSQL. The caller then runs the statement itself.
//
// Statements run in the order queued, after everything else in tx. Queue
// only a statement whose result and effects tx does not read.
func ExecAtCommit(tx *sql.Tx, query string, args ...any) bool {
	h := pipelinedHooks(tx)
	if h == nil {
		return false
	}
	h.atCommit = append(h.atCommit, Stmt{Query: query, Args: args})
	return true
}

// ExecAtCommitMerged is [ExecAtCommit] for statements that merge: the
// items queued under one key in a transaction become one statement, built
// by build from all of them at commit and sent where the first was
// queued. It reports false, queuing nothing, where ExecAtCommit would.
// Every call with a key must pass the same build.
func ExecAtCommitMerged(tx *sql.Tx, key, item any, build func(items []any) Stmt) bool {
	h := pipelinedHooks(tx)
	if h == nil {
		return false
	}
	if m := h.merged[key]; m != nil {
		m.items = append(m.items, item)
		return true
	}
	if h.merged == nil {
		h.merged = map[any]*mergedStmt{}
	}
	m := &mergedStmt{items: []any{item}, build: build}
	h.merged[key] = m
	h.atCommit = append(h.atCommit, Stmt{merged: m})
	return true
}

// pipelinedHooks returns the hooks of tx if its driver sends queued
// statements with its COMMIT, else nil.
func pipelinedHooks(tx *sql.Tx) *txHooks {
	v, ok := commitHooks.Load(tx)
	if !ok || !v.(*txHooks).pipelined {
		return nil
	}
	return v.(*txHooks)
}

// mergedStmt is the items of a statement queued by ExecAtCommitMerged.
type mergedStmt struct {
	items []any
	build func(items []any) Stmt
}

// queued returns the statements queued to run at commit, merged ones
// built.
func (h *txHooks) queued() []Stmt {
	for i, st := range h.atCommit {
		if st.merged != nil {
			h.atCommit[i] = st.merged.build(st.merged.items)
		}
	}
	return h.atCommit
}

// hooksKey carries a transaction's hooks from [DB.begin] to the driver's
// BeginTx.
type hooksKey struct{}

// begin starts a transaction on db's writer whose hooks ([AfterCommit],
// [ExecAtCommit]) are registered; the caller must end it with tx.Commit
// or tx.Rollback and then drop it from commitHooks.
func (db *DB) begin(ctx context.Context) (*sql.Tx, *txHooks, error) {
	h := &txHooks{db: db}
	tx, err := db.writer.BeginTx(context.WithValue(ctx, hooksKey{}, h), nil)
	if err != nil {
		return nil, nil, fmt.Errorf("begin tx: %w", err)
	}
	commitHooks.Store(tx, h)
	return tx, h, nil
}

// pgConnector hands out pgx connections wrapped in pgConn.
type pgConnector struct{ driver.Connector }

func (c pgConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &pgConn{Conn: conn.(*stdlib.Conn)}, nil
}

func openPgxPool(cfg pgx.ConnConfig) *sql.DB {
	return sql.OpenDB(pgConnector{stdlib.GetConnector(cfg)})
}

// pgConn is a pgx connection whose transactions send their queued
// statements with COMMIT, and their BEGIN with their first statement.
// Every other method is pgx's own.
type pgConn struct {
	*stdlib.Conn
	owed *pgTx // a transaction whose BEGIN has not been sent yet
}

// BeginTx begins a transaction. One begun by [RunInTx] or a [Scope] with
// default options does not send its BEGIN at once: a first statement run
// with Exec carries it, in one round trip (a first query sends it just
// before itself), and a transaction that runs nothing sends nothing.
func (c *pgConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	h, _ := ctx.Value(hooksKey{}).(*txHooks)
	if h == nil {
		return c.Conn.BeginTx(ctx, opts)
	}
	if c.Conn.Conn().IsClosed() {
		return nil, driver.ErrBadConn
	}
	t := &pgTx{owner: c, ctx: ctx, hooks: h}
	if opts.Isolation != driver.IsolationLevel(sql.LevelDefault) || opts.ReadOnly {
		tx, err := c.Conn.BeginTx(ctx, opts)
		if err != nil {
			return nil, err
		}
		t.Tx = tx
	} else {
		c.owed = t
	}
	h.pipelined = true
	return t, nil
}

// payBegin sends the BEGIN a transaction owes, on its own.
func (c *pgConn) payBegin(ctx context.Context) error {
	c.owed = nil
	if _, err := c.Conn.Conn().Exec(ctx, "begin"); err != nil {
		if pgconn.SafeToRetry(err) {
			return fmt.Errorf("%w: begin: %v", driver.ErrBadConn, err)
		}
		return err
	}
	return nil
}

func (c *pgConn) ExecContext(ctx context.Context, query string, argsV []driver.NamedValue) (driver.Result, error) {
	if c.owed == nil {
		return c.Conn.ExecContext(ctx, query, argsV)
	}
	args := make([]any, len(argsV))
	for i, v := range argsV {
		args[i] = v.Value
	}
	if len(args) > 0 {
		switch args[0].(type) {
		case pgx.QueryExecMode, pgx.QueryResultFormats, pgx.QueryResultFormatsByOID, pgx.QueryRewriter:
			// A batch does not take per-query options: BEGIN goes alone.
			if err := c.payBegin(ctx); err != nil {
				return nil, err
			}
			return c.Conn.ExecContext(ctx, query, argsV)
		}
	}
	c.owed = nil
	var tag pgconn.CommandTag
	var err error
	if len(args) == 0 {
		// Without arguments pgx sends the text as a simple query, which
		// may hold several statements: BEGIN goes in front of them.
		tag, err = c.Conn.Conn().Exec(ctx, "begin;\n"+query)
	} else {
		var b pgx.Batch
		b.Queue("begin")
		b.Queue(query, args...)
		res := c.Conn.Conn().SendBatch(ctx, &b)
		if _, err = res.Exec(); err == nil {
			tag, err = res.Exec()
		}
		if cerr := res.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil && pgconn.SafeToRetry(err) {
		// Nothing reached the server: the connection is gone.
		err = fmt.Errorf("%w: begin: %v", driver.ErrBadConn, err)
	}
	return driver.RowsAffected(tag.RowsAffected()), err
}

func (c *pgConn) QueryContext(ctx context.Context, query string, argsV []driver.NamedValue) (driver.Rows, error) {
	if c.owed != nil {
		if err := c.payBegin(ctx); err != nil {
			return nil, err
		}
	}
	return c.Conn.QueryContext(ctx, query, argsV)
}

func (c *pgConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	if c.owed != nil {
		if err := c.payBegin(ctx); err != nil {
			return nil, err
		}
	}
	return c.Conn.PrepareContext(ctx, query)
}

// pgTx is a transaction begun by RunInTx or a Scope. Tx is pgx's when the
// BEGIN was sent at once; otherwise the BEGIN is owed, or was sent by the
// connection with a first statement.
type pgTx struct {
	driver.Tx
	owner *pgConn
	ctx   context.Context
	hooks *txHooks
}

// Commit sends the queued statements and COMMIT in one pipeline (with the
// BEGIN, if no statement has sent it yet).
func (t *pgTx) Commit() error {
	owed := t.owner.owed == t
	t.owner.owed = nil
	switch {
	case owed && len(t.hooks.atCommit) == 0:
		return nil // nothing ran: nothing to send
	case t.Tx != nil && len(t.hooks.atCommit) == 0:
		return t.Tx.Commit()
	case len(t.hooks.atCommit) == 0:
		// A plain COMMIT, as pgx's own transaction sends it.
		tag, err := t.owner.Conn.Conn().Exec(t.ctx, "commit")
		if err == nil && tag.String() != "COMMIT" {
			err = pgx.ErrTxCommitRollback
		}
		return err
	}
	return pipeline(t.ctx, t.owner.Conn.Conn(), owed, t.hooks.queued(), nil)
}

// Rollback ends the transaction, if its BEGIN was sent.
func (t *pgTx) Rollback() error {
	if t.owner.owed == t {
		t.owner.owed = nil
		return nil
	}
	if t.Tx != nil {
		return t.Tx.Rollback()
	}
	conn := t.owner.Conn.Conn()
	if conn.IsClosed() {
		return driver.ErrBadConn
	}
	if _, err := conn.Exec(t.ctx, "rollback"); err != nil {
		// The connection's state is unknown: the pool drops it.
		return fmt.Errorf("%w: rollback: %v", driver.ErrBadConn, err)
	}
	return nil
}

// A Stmt is one statement of [ExecBatch].
type Stmt struct {
	Query string
	Args  []any

	merged *mergedStmt // queued by ExecAtCommitMerged: built at commit
}

// BatchError is the error of an [ExecBatch] whose statement Index failed.
type BatchError struct {
	Index int
	Err   error
}

func (e *BatchError) Error() string {
	return fmt.Sprintf("statement %d of the batch: %v", e.Index, e.Err)
}
func (e *BatchError) Unwrap() error { return e.Err }

// ExecBatch runs stmts in one transaction on db's writer and returns the
// number of rows each affected. On PostgreSQL the BEGIN, the statements
// and the COMMIT go to the server in one pipeline: one round trip however
// many statements there are. If a statement fails nothing commits, and
// the error is a [*BatchError] naming it. Like [RunInTx] it runs the whole
// batch again after a serialization failure, a deadlock or a busy SQLite
// file.
//
// It is for a writer whose statements do not depend on each other's
// results, such as a log that commits many independent records at once.
func ExecBatch(ctx context.Context, db *DB, stmts []Stmt) ([]int64, error) {
	if len(stmts) == 0 {
		return nil, nil
	}
	n := make([]int64, len(stmts))
	if db.dialect != Postgres {
		err := RunInTx(ctx, db, func(tx *sql.Tx) error {
			for i, s := range stmts {
				res, err := tx.ExecContext(ctx, s.Query, s.Args...)
				if err != nil {
					return &BatchError{Index: i, Err: err}
				}
				n[i], _ = res.RowsAffected()
			}
			return nil
		})
		return n, err
	}
	err := retryConflicts(ctx, func() error {
		conn, err := db.writer.Conn(ctx)
		if err != nil {
			return fmt.Errorf("sqldb: batch: %w", err)
		}
		defer conn.Close()
		return conn.Raw(func(dc any) error { return pipeline(ctx, dc.(*pgConn).Conn.Conn(), true, stmts, n) })
	})
	return n, err
}

// pipeline sends stmts and COMMIT, after a BEGIN if begin is set, in one
// round trip, and fills n (if not nil) with the rows each statement
// affected. If a statement fails the server skips the rest, COMMIT
// included, and the transaction is rolled back here.
func pipeline(ctx context.Context, conn *pgx.Conn, begin bool, stmts []Stmt, n []int64) error {
	var b pgx.Batch
	if begin {
		b.Queue("begin")
	}
	for _, s := range stmts {
		b.Queue(s.Query, s.Args...)
	}
	b.Queue("commit")
	res := conn.SendBatch(ctx, &b)
	var err error
	if begin {
		_, err = res.Exec()
	}
	for i := 0; err == nil && i < len(stmts); i++ {
		var tag pgconn.CommandTag
		if tag, err = res.Exec(); err != nil {
			err = &BatchError{Index: i, Err: err}
		}
		if n != nil {
			n[i] = tag.RowsAffected()
		}
	}
	if err == nil {
		var tag pgconn.CommandTag
		if tag, err = res.Exec(); err == nil && tag.String() != "COMMIT" {
			err = pgx.ErrTxCommitRollback
		}
	}
	if cerr := res.Close(); err == nil {
		err = cerr
	}
	if err != nil && !conn.IsClosed() && conn.PgConn().TxStatus() != 'I' {
		// The transaction is still open, failed: end it. A broken
		// connection is discarded by the pool.
		_, _ = conn.Exec(context.WithoutCancel(ctx), "rollback")
	}
	return err
}
