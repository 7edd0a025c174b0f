package sqldb_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"

	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

func atCommitTable(t *testing.T, db *sqldb.DB) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), `CREATE TABLE at_commit (n INTEGER PRIMARY KEY, tag TEXT NOT NULL)`); err != nil {
		t.Fatal(err)
	}
}

func atCommitRows(t *testing.T, db *sqldb.DB) map[int]string {
	t.Helper()
	q, err := db.QueryContext(context.Background(), `SELECT n, tag FROM at_commit`)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	got := map[int]string{}
	for q.Next() {
		var n int
		var tag string
		if err := q.Scan(&n, &tag); err != nil {
			t.Fatal(err)
		}
		got[n] = tag
	}
	return got
}

// TestExecAtCommit: on PostgreSQL queued statements run after the
// transaction's own, in order, and commit with it.
func TestExecAtCommit(t *testing.T) {
	ctx := context.Background()
	db := sqldbtest.Open(t, sqldb.Postgres)
	atCommitTable(t, db)
	err := sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
		if !sqldb.ExecAtCommit(tx, `INSERT INTO at_commit (n, tag) VALUES ($1, $2)`, 1, "queued first") {
			t.Fatal("ExecAtCommit refused a RunInTx transaction on PostgreSQL")
		}
		sqldb.ExecAtCommit(tx, `UPDATE at_commit SET tag = tag || ', then updated' WHERE n = $1`, 1)
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM at_commit`).Scan(&n); err != nil || n != 0 {
			t.Errorf("queued statement ran before the commit: %d rows, %v", n, err)
		}
		// Runs before the queued statements, although it comes later.
		_, err := tx.ExecContext(ctx, `INSERT INTO at_commit (n, tag) VALUES (2, 'direct')`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := atCommitRows(t, db); got[1] != "queued first, then updated" || got[2] != "direct" || len(got) != 2 {
		t.Errorf("rows = %v", got)
	}
}

// TestExecAtCommitFailure: a queued statement that fails fails the commit
// and rolls back the whole transaction, and the connection stays usable.
func TestExecAtCommitFailure(t *testing.T) {
	ctx := context.Background()
	db := sqldbtest.Open(t, sqldb.Postgres)
	atCommitTable(t, db)
	db.Writer().SetMaxOpenConns(1) // the next transaction gets the same connection
	hooked := false
	err := sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
		sqldb.AfterCommit(tx, func(*sqldb.DB) { hooked = true })
		if _, err := tx.ExecContext(ctx, `INSERT INTO at_commit (n, tag) VALUES (1, 'direct')`); err != nil {
			return err
		}
		sqldb.ExecAtCommit(tx, `INSERT INTO at_commit (n, tag) VALUES ($1, $2)`, 1, "clash")
		sqldb.ExecAtCommit(tx, `INSERT INTO at_commit (n, tag) VALUES ($1, $2)`, 3, "after the failure")
		return nil
	})
	if !sqldb.IsUniqueViolation(err) {
		t.Fatalf("err = %v, want the queued statement's unique violation", err)
	}
	if hooked {
		t.Error("AfterCommit hook ran for a failed commit")
	}
	if got := atCommitRows(t, db); len(got) != 0 {
		t.Errorf("rows after the failed commit = %v, want none", got)
	}
	err = sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
		sqldb.ExecAtCommit(tx, `INSERT INTO at_commit (n, tag) VALUES ($1, $2)`, 4, "next")
		return nil
	})
	if err != nil {
		t.Fatalf("next transaction on the connection: %v", err)
	}
	if got := atCommitRows(t, db); got[4] != "next" || len(got) != 1 {
		t.Errorf("rows = %v", got)
	}
}

// TestExecAtCommitInScope: a scope's queued statements travel with its
// owner's commit, or not at all.
func TestExecAtCommitInScope(t *testing.T) {
	ctx := context.Background()
	db := sqldbtest.Open(t, sqldb.Postgres)
	atCommitTable(t, db)
	for i, commit := range []bool{false, true} {
		sctx, scope := sqldb.WithScope(ctx, db)
		err := sqldb.RunInScope(sctx, db, func(tx *sql.Tx) error {
			if !sqldb.ExecAtCommit(tx, `INSERT INTO at_commit (n, tag) VALUES ($1, 'scope')`, i) {
				t.Error("ExecAtCommit refused a scope's transaction")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if !commit {
			scope.Rollback()
			continue
		}
		if err := scope.Commit(ctx, func(*sql.Tx) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if got := atCommitRows(t, db); got[1] != "scope" || len(got) != 1 {
		t.Errorf("rows = %v, want only the committed scope's", got)
	}
}

// TestExecAtCommitRefuses: where the statement cannot travel with the
// commit, nothing is queued and the caller is told to run it itself.
func TestExecAtCommitRefuses(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := sqldbtest.Open(t, d)
		atCommitTable(t, db)
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if sqldb.ExecAtCommit(tx, `INSERT INTO at_commit (n, tag) VALUES (1, 'x')`) {
			t.Error("ExecAtCommit accepted a transaction RunInTx does not run")
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		err = sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
			if ok := sqldb.ExecAtCommit(tx, `INSERT INTO at_commit (n, tag) VALUES (2, 'x')`); ok != (d == sqldb.Postgres) {
				t.Errorf("ExecAtCommit on %s = %v", d, ok)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := atCommitRows(t, db); len(got) != map[sqldb.Dialect]int{sqldb.Postgres: 1, sqldb.SQLite: 0}[d] {
			t.Errorf("rows = %v", got)
		}
	})
}

// TestExecBatch: the statements commit together and report their rows;
// one that fails commits none of them and is named by its index.
func TestExecBatch(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := sqldbtest.Open(t, d)
		atCommitTable(t, db)
		db.Writer().SetMaxOpenConns(1) // every batch on the same connection
		n, err := sqldb.ExecBatch(ctx, db, []sqldb.Stmt{
			{Query: `INSERT INTO at_commit (n, tag) VALUES ($1, $2), ($3, $4)`, Args: []any{1, "a", 2, "b"}},
			{Query: `UPDATE at_commit SET tag = tag || '!' WHERE n > $1`, Args: []any{0}},
			{Query: `DELETE FROM at_commit WHERE n = $1`, Args: []any{7}},
		})
		if err != nil || fmt.Sprint(n) != "[2 2 0]" {
			t.Fatalf("rows affected = %v, %v; want [2 2 0]", n, err)
		}
		_, err = sqldb.ExecBatch(ctx, db, []sqldb.Stmt{
			{Query: `INSERT INTO at_commit (n, tag) VALUES ($1, $2)`, Args: []any{3, "c"}},
			{Query: `INSERT INTO at_commit (n, tag) VALUES ($1, $2)`, Args: []any{1, "clash"}},
			{Query: `INSERT INTO at_commit (n, tag) VALUES ($1, $2)`, Args: []any{4, "d"}},
		})
		var be *sqldb.BatchError
		if !errors.As(err, &be) || be.Index != 1 || !sqldb.IsUniqueViolation(err) {
			t.Fatalf("err = %v, want statement 1's unique violation", err)
		}
		if got := atCommitRows(t, db); fmt.Sprint(got) != "map[1:a! 2:b!]" {
			t.Errorf("rows = %v, want only the first batch's", got)
		}
		if n, err := sqldb.ExecBatch(ctx, db, []sqldb.Stmt{{Query: `DELETE FROM at_commit`}}); err != nil || n[0] != 2 {
			t.Errorf("batch after a failed one: %v, %v", n, err)
		}
	})
}

// TestBeginWithFirstStatement: on PostgreSQL a transaction's BEGIN is
// sent with its first Exec (or just before a first query), and the
// transaction is still one: what it wrote is invisible to others until it
// commits, and a rollback undoes all of it, whatever its first statement.
func TestBeginWithFirstStatement(t *testing.T) {
	ctx := context.Background()
	db := sqldbtest.Open(t, sqldb.Postgres)
	atCommitTable(t, db)
	errUndo := errors.New("undo")
	count := func() int {
		t.Helper()
		var n int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM at_commit`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	firsts := map[string]func(tx *sql.Tx) error{
		"exec": func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO at_commit (n, tag) VALUES (1, 'first')`)
			return err
		},
		"exec of several statements": func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO at_commit (n, tag) VALUES (1, 'first'); INSERT INTO at_commit (n, tag) VALUES (3, 'third')`)
			return err
		},
		"exec with a per-query option": func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO at_commit (n, tag) VALUES ($1, 'first')`, sqldb.PlanPerCall, 1)
			return err
		},
		"query": func(tx *sql.Tx) error {
			var n int
			return tx.QueryRowContext(ctx, `SELECT count(*) FROM at_commit`).Scan(&n)
		},
	}
	for name, first := range firsts {
		err := sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
			if err := first(tx); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO at_commit (n, tag) VALUES (2, 'second')`); err != nil {
				return err
			}
			if n := count(); n != 0 {
				t.Errorf("%s first: another connection sees %d rows before the commit", name, n)
			}
			var open bool
			if err := tx.QueryRowContext(ctx, `SELECT txid_current_if_assigned() IS NOT NULL`).Scan(&open); err != nil || !open {
				t.Errorf("%s first: the writes are not in the transaction (%v)", name, err)
			}
			return errUndo
		})
		if !errors.Is(err, errUndo) {
			t.Fatalf("%s first: %v", name, err)
		}
		if n := count(); n != 0 {
			t.Errorf("%s first: %d rows left after the rollback", name, n)
		}
	}

	// A first statement that fails: the error is the server's, and the
	// connection goes back to the pool clean.
	if _, err := db.ExecContext(ctx, `INSERT INTO at_commit (n, tag) VALUES (7, 'committed')`); err != nil {
		t.Fatal(err)
	}
	err := sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO at_commit (n, tag) VALUES (7, 'again')`)
		return err
	})
	if !sqldb.IsUniqueViolation(err) {
		t.Fatalf("duplicate first insert: %v, want a unique violation", err)
	}
	for i := range 10 {
		err := sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO at_commit (n, tag) VALUES ($1, 'after')`, 100+i)
			return err
		})
		if err != nil {
			t.Fatalf("transaction %d after the failed one: %v", i, err)
		}
	}

	// A failed statement whose error fn ignores aborts the transaction:
	// its COMMIT is a rollback, and says so.
	err = sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO at_commit (n, tag) VALUES (200, 'first')`); err != nil {
			return err
		}
		_, _ = tx.ExecContext(ctx, `INSERT INTO at_commit (n, tag) VALUES (7, 'duplicate, ignored')`)
		return nil
	})
	if err == nil {
		t.Error("the commit of an aborted transaction reported success")
	}

	// A transaction that runs nothing commits; one that only queues
	// statements sends its BEGIN with them.
	if err := sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error { return nil }); err != nil {
		t.Fatalf("empty transaction: %v", err)
	}
	err = sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
		sqldb.ExecAtCommit(tx, `INSERT INTO at_commit (n, tag) VALUES (8, 'queued only')`)
		sqldb.ExecAtCommit(tx, `INSERT INTO at_commit (n, tag) VALUES (7, 'duplicate')`)
		return nil
	})
	if !sqldb.IsUniqueViolation(err) {
		t.Fatalf("queued-only transaction with a duplicate: %v, want a unique violation", err)
	}
	if got := atCommitRows(t, db); got[8] != "" || len(got) != 11 {
		t.Errorf("rows after the failed queued-only transaction: %v", got)
	}
}

// TestExecAtCommitMerged: items queued under one key become one
// statement, sent where the first was queued among the other queued
// statements; it queues nothing on SQLite.
func TestExecAtCommitMerged(t *testing.T) {
	ctx := context.Background()
	db := sqldbtest.Open(t, sqldb.Postgres)
	atCommitTable(t, db)
	built := 0
	build := func(items []any) sqldb.Stmt {
		built++
		values, args := sqldb.Rows(0, "(?, ?)", len(items), func(i int) []any { return []any{items[i], fmt.Sprint("merged ", len(items))} })
		return sqldb.Stmt{Query: `INSERT INTO at_commit (n, tag) VALUES ` + values, Args: args}
	}
	err := sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
		sqldb.ExecAtCommit(tx, `INSERT INTO at_commit (n, tag) VALUES (1, 'before')`)
		if !sqldb.ExecAtCommitMerged(tx, "k", 2, build) {
			t.Fatal("ExecAtCommitMerged refused a RunInTx transaction on PostgreSQL")
		}
		// Runs after the merged insert, queued before it: 2 and 3 exist.
		sqldb.ExecAtCommit(tx, `UPDATE at_commit SET tag = tag || ', seen' WHERE n IN (2, 3)`)
		sqldb.ExecAtCommitMerged(tx, "k", 3, build)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]string{1: "before", 2: "merged 2, seen", 3: "merged 2, seen"}
	if got := atCommitRows(t, db); fmt.Sprint(got) != fmt.Sprint(want) || built != 1 {
		t.Errorf("rows = %v, built %d times; want %v, built once", got, built, want)
	}

	lite := sqldbtest.Open(t, sqldb.SQLite)
	err = sqldb.RunInTx(ctx, lite, func(tx *sql.Tx) error {
		if sqldb.ExecAtCommitMerged(tx, "k", 1, build) {
			t.Error("ExecAtCommitMerged queued on SQLite")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSavepoint: a piece of work that fails leaves nothing — neither its
// writes nor what it queued for the commit — and the transaction goes
// on, even after a failed statement on PostgreSQL.
func TestSavepoint(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := sqldbtest.Open(t, d)
		atCommitTable(t, db)
		build := func(items []any) sqldb.Stmt {
			values, args := sqldb.Rows(0, "(?, 'merged')", len(items), func(i int) []any { return []any{items[i]} })
			return sqldb.Stmt{Query: `INSERT INTO at_commit (n, tag) VALUES ` + values, Args: args}
		}
		insert := func(tx *sql.Tx, n int) error {
			if sqldb.ExecAtCommitMerged(tx, "k", n, build) {
				return nil
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO at_commit (n, tag) VALUES ($1, 'merged')`, n)
			return err
		}
		refused := errors.New("refused")
		err := sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO at_commit (n, tag) VALUES (1, 'kept')`); err != nil {
				return err
			}
			if err := sqldb.Savepoint(ctx, tx, func() error { return insert(tx, 10) }); err != nil {
				return err
			}
			// Refused after writing and queueing.
			err := sqldb.Savepoint(ctx, tx, func() error {
				if _, err := tx.ExecContext(ctx, `INSERT INTO at_commit (n, tag) VALUES (2, 'undone')`); err != nil {
					return err
				}
				if err := insert(tx, 11); err != nil {
					return err
				}
				return refused
			})
			if !errors.Is(err, refused) {
				t.Errorf("Savepoint = %v, want fn's error", err)
			}
			// A statement that fails.
			err = sqldb.Savepoint(ctx, tx, func() error {
				_, err := tx.ExecContext(ctx, `INSERT INTO at_commit (n, tag) VALUES (1, 'duplicate')`)
				return err
			})
			if !sqldb.IsUniqueViolation(err) {
				t.Errorf("Savepoint = %v, want the unique violation", err)
			}
			return insert(tx, 12)
		})
		if err != nil {
			t.Fatal(err)
		}
		want := map[int]string{1: "kept", 10: "merged", 12: "merged"}
		if got := atCommitRows(t, db); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("rows = %v, want %v", got, want)
		}
	})
}
