package sqldb_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

func count(t *testing.T, ctx context.Context, db *sqldb.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM item`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func scopeDB(t *testing.T, d sqldb.Dialect) *sqldb.DB {
	t.Helper()
	db := sqldbtest.Open(t, d)
	if _, err := db.ExecContext(context.Background(), `CREATE TABLE item (id TEXT PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	return db
}

func insert(id string) func(tx *sql.Tx) error {
	return func(tx *sql.Tx) error {
		_, err := tx.ExecContext(context.Background(), `INSERT INTO item (id) VALUES ($1)`, id)
		return err
	}
}

// TestScopeCommitsTogether: work joined with RunInScope commits only with
// the owner's Commit, together with the owner's own statement; inside the
// scope db's statements see the work, outside they do not.
func TestScopeCommitsTogether(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		bg := context.Background()
		db := scopeDB(t, d)
		ctx, scope := sqldb.WithScope(bg, db)
		if scope.Active() {
			t.Fatal("a scope no work joined is active")
		}
		for _, id := range []string{"a", "b"} {
			if err := sqldb.RunInScope(ctx, db, insert(id)); err != nil {
				t.Fatal(err)
			}
		}
		if n := count(t, ctx, db); n != 2 {
			t.Errorf("inside the scope %d items, want 2 (its own writes)", n)
		}
		if d == sqldb.Postgres { // SQLite's one writer is the scope's until it ends
			if n := count(t, bg, db); n != 0 {
				t.Errorf("outside the scope %d items before the commit, want 0", n)
			}
		}
		hooked := false
		err := scope.Commit(bg, func(tx *sql.Tx) error {
			sqldb.AfterCommit(tx, func(*sqldb.DB) { hooked = true })
			return insert("owner")(tx)
		})
		if err != nil {
			t.Fatal(err)
		}
		if n := count(t, bg, db); n != 3 || !hooked {
			t.Errorf("after the commit %d items (want 3), hook ran %v", n, hooked)
		}
		if err := sqldb.RunInScope(ctx, db, insert("late")); err == nil {
			t.Error("work joined a scope that had ended")
		}
	})
}

// TestScopeSpoiled: an error in joined work spoils the scope: later work
// fails at once, Commit refuses, and nothing is kept.
func TestScopeSpoiled(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		bg := context.Background()
		db := scopeDB(t, d)
		ctx, scope := sqldb.WithScope(bg, db)
		if err := sqldb.RunInScope(ctx, db, insert("a")); err != nil {
			t.Fatal(err)
		}
		rule := errors.New("rule broken")
		if err := sqldb.RunInScope(ctx, db, func(*sql.Tx) error { return rule }); !errors.Is(err, rule) {
			t.Fatalf("RunInScope = %v", err)
		}
		if err := sqldb.RunInScope(ctx, db, insert("b")); !errors.Is(err, rule) {
			t.Errorf("work after the failure = %v, want the failure", err)
		}
		if err := scope.Commit(bg, insert("owner")); !errors.Is(err, rule) {
			t.Errorf("Commit of a spoiled scope = %v, want the failure", err)
		}
		if n := count(t, bg, db); n != 0 {
			t.Errorf("%d items kept from a spoiled scope, want 0", n)
		}
	})
}

// TestScopeOnlyForItsDatabase: RunInScope on another database, and
// RunInTx on the scope's, run transactions of their own.
func TestScopeOnlyForItsDatabase(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		bg := context.Background()
		db, other := scopeDB(t, d), scopeDB(t, d)
		ctx, scope := sqldb.WithScope(bg, db)
		if err := sqldb.RunInScope(ctx, other, insert("x")); err != nil {
			t.Fatal(err)
		}
		if err := sqldb.RunInTx(ctx, db, insert("own")); err != nil {
			t.Fatal(err)
		}
		if scope.Active() {
			t.Error("the scope began for work that did not join it")
		}
		scope.Rollback()
		if count(t, bg, other) != 1 || count(t, bg, db) != 1 {
			t.Error("work outside the scope was not committed on its own")
		}
	})
}
