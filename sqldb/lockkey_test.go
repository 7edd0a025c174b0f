package sqldb_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

func TestLockKey(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := sqldbtest.Open(t, d)
		ctx := context.Background()
		if _, err := db.ExecContext(ctx, `CREATE TABLE seen (k TEXT NOT NULL)`); err != nil {
			t.Fatal(err)
		}
		// Two transactions check for a row's absence and insert it, under
		// one key: only one may insert.
		insertIfAbsent := func(started chan<- struct{}) error {
			return sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
				// One takes the key alone, the other with others.
				if started != nil {
					if err := sqldb.LockKey(ctx, tx, "k1"); err != nil {
						return err
					}
				} else if err := sqldb.LockKeys(ctx, tx, []string{"k2", "k1", "k0"}); err != nil {
					return err
				}
				var n int
				if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM seen WHERE k = 'k1'`).Scan(&n); err != nil {
					return err
				}
				if started != nil {
					// Found it absent: hold the lock a while before acting
					// on that.
					close(started)
					time.Sleep(100 * time.Millisecond)
				}
				if n == 0 {
					_, err := tx.ExecContext(ctx, `INSERT INTO seen (k) VALUES ('k1')`)
					return err
				}
				return nil
			})
		}
		started := make(chan struct{})
		done := make(chan error)
		go func() { done <- insertIfAbsent(started) }()
		<-started
		if err := insertIfAbsent(nil); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		var n int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM seen`).Scan(&n); err != nil || n != 1 {
			t.Errorf("rows = %d, %v; want 1", n, err)
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if err := sqldb.LockKey(ctx, tx, "k"); err == nil {
			t.Error("LockKey outside RunInTx: no error")
		}
	})
}

func TestDeprovision(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		base, prefix := t.TempDir(), ""
		if d == sqldb.Postgres {
			base, prefix = sqldbtest.PostgresURL(t), sqldbtest.RandomName("dep")+"_"
		}
		cfg := sqldb.ProvisionConfig{Prefix: prefix}
		u, err := sqldb.Provision(ctx, base, "svc", cfg)
		if err != nil {
			t.Fatal(err)
		}
		db, err := sqldb.Open(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, `CREATE TABLE kept (x INTEGER)`); err != nil {
			t.Fatal(err)
		}
		db.Close()
		for range 2 { // a second time finds nothing to remove
			if err := sqldb.Deprovision(ctx, base, "svc", cfg); err != nil {
				t.Fatal(err)
			}
		}
		// Provisioned again, it is empty.
		if u, err = sqldb.Provision(ctx, base, "svc", cfg); err != nil {
			t.Fatal(err)
		}
		db, err = sqldb.Open(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.ExecContext(ctx, `INSERT INTO kept VALUES (1)`); err == nil {
			t.Error("the table survived Deprovision")
		}
		if err := sqldb.Deprovision(ctx, base, "svc", cfg); err != nil && d == sqldb.SQLite {
			t.Fatal(err)
		}
		if d == sqldb.Postgres {
			db.Close()
			if err := sqldb.Deprovision(ctx, base, "svc", cfg); err != nil {
				t.Fatal(err)
			}
		}
	})
}
