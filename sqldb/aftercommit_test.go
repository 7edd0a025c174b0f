package sqldb_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

func TestAfterCommit(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := sqldbtest.Open(t, d)
		calls := 0
		err := sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
			if !sqldb.AfterCommit(tx, func(got *sqldb.DB) {
				if got != db {
					t.Error("hook got another database")
				}
				calls++
			}) {
				t.Error("AfterCommit refused a RunInTx transaction")
			}
			if calls != 0 {
				t.Error("hook ran before the commit")
			}
			return nil
		})
		if err != nil || calls != 1 {
			t.Fatalf("after commit: calls = %d, err = %v; want 1", calls, err)
		}
		_ = sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
			sqldb.AfterCommit(tx, func(*sqldb.DB) { calls++ })
			return errors.New("rolled back")
		})
		if calls != 1 {
			t.Errorf("a rolled-back transaction ran its hook")
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if sqldb.AfterCommit(tx, func(*sqldb.DB) {}) {
			t.Error("AfterCommit accepted a transaction RunInTx does not run")
		}
	})
}

func TestListen(t *testing.T) {
	db := sqldbtest.Open(t, sqldb.Postgres)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := sqldb.Listen(ctx, db, "sysops_test_channel")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `SELECT pg_notify('sysops_test_channel', 'x')`); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("no wake-up after NOTIFY")
	}
	if _, err := sqldb.Listen(ctx, sqldbtest.Open(t, sqldb.SQLite), "x"); !errors.Is(err, sqldb.ErrNotPostgres) {
		t.Errorf("Listen on SQLite: %v, want ErrNotPostgres", err)
	}
}
