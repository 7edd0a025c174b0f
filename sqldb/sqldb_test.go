package sqldb_test

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

func TestOpenSQLiteSettings(t *testing.T) {
	db := sqldbtest.Open(t, sqldb.SQLite)
	ctx := context.Background()
	for pragma, want := range map[string]string{
		"journal_mode": "wal",
		"foreign_keys": "1",
		"busy_timeout": "5000",
		"synchronous":  "2", // FULL
	} {
		var got string
		if err := db.Writer().QueryRowContext(ctx, "PRAGMA "+pragma).Scan(&got); err != nil {
			t.Fatalf("PRAGMA %s: %v", pragma, err)
		}
		if got != want {
			t.Errorf("writer PRAGMA %s = %s, want %s", pragma, got, want)
		}
	}
	if n := db.Writer().Stats().MaxOpenConnections; n != 1 {
		t.Errorf("writer MaxOpenConnections = %d, want 1", n)
	}
	if _, err := db.ExecContext(ctx, "CREATE TABLE t (id INTEGER PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Reader().ExecContext(ctx, "INSERT INTO t (id) VALUES (1)"); err == nil {
		t.Error("a write through the read pool succeeded; readers must be query_only")
	}
}

func TestOpenSQLiteSynchronousOption(t *testing.T) {
	ctx := context.Background()
	db, err := sqldb.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "x.db")+"?synchronous=normal")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var got string
	if err := db.Writer().QueryRowContext(ctx, "PRAGMA synchronous").Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != "1" {
		t.Errorf("PRAGMA synchronous = %s, want 1 (NORMAL)", got)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "plain-file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, url, want string
	}{
		{"unknown scheme", "mysql://root@localhost/db", "unknown database URL scheme"},
		{"no path", "sqlite:", "file path is required"},
		{"memory", "sqlite::memory:", "in-memory"},
		{"missing directory", "sqlite:" + filepath.Join(dir, "nope", "x.db"), "no such file or directory"},
		{"directory is a file", "sqlite:" + filepath.Join(file, "x.db"), "not a directory"},
		{"unknown option", "sqlite:" + filepath.Join(dir, "x.db") + "?journal=off", `unknown option "journal"`},
		{"bad synchronous", "sqlite:" + filepath.Join(dir, "x.db") + "?synchronous=off", "synchronous=off"},
		{"unreachable postgres", "postgres://postgres@127.0.0.1:1/test?connect_timeout=2", "127.0.0.1"},
		{"password redacted", "postgres://u:hunter2@127.0.0.1:1/test?connect_timeout=2", "xxxxx"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, err := sqldb.Open(context.Background(), tt.url)
			if err == nil {
				db.Close()
				t.Fatalf("Open(%q) succeeded, want error", tt.url)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not mention %q", msg, tt.want)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans several lines: %q", msg)
			}
			if strings.Contains(msg, "hunter2") {
				t.Errorf("error leaks the password: %q", msg)
			}
		})
	}
}

func TestRunInTx(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := sqldbtest.Open(t, d)
		ctx := context.Background()
		if _, err := db.ExecContext(ctx, "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT NOT NULL)"); err != nil {
			t.Fatal(err)
		}
		count := func() int {
			t.Helper()
			var n int
			if err := db.QueryRowContext(ctx, "SELECT count(*) FROM item").Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}

		t.Run("commit", func(t *testing.T) {
			err := sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
				_, err := tx.ExecContext(ctx, "INSERT INTO item (id, name) VALUES ($1, $2)", 1, "one")
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if n := count(); n != 1 {
				t.Errorf("count = %d after commit, want 1", n)
			}
		})

		t.Run("rollback on error", func(t *testing.T) {
			boom := errors.New("boom")
			err := sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
				if _, err := tx.ExecContext(ctx, "INSERT INTO item (id, name) VALUES ($1, $2)", 2, "two"); err != nil {
					return err
				}
				return boom
			})
			if !errors.Is(err, boom) {
				t.Fatalf("err = %v, want boom", err)
			}
			if n := count(); n != 1 {
				t.Errorf("count = %d after rollback, want 1", n)
			}
		})

		t.Run("rollback on panic", func(t *testing.T) {
			func() {
				defer func() {
					if p := recover(); p != "kaboom" {
						t.Errorf("recovered %v, want the original panic", p)
					}
				}()
				_ = sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
					if _, err := tx.ExecContext(ctx, "INSERT INTO item (id, name) VALUES ($1, $2)", 3, "three"); err != nil {
						return err
					}
					panic("kaboom")
				})
			}()
			if n := count(); n != 1 {
				t.Errorf("count = %d after panic, want 1", n)
			}
			// The writer must be usable again: the panicking tx released it.
			if err := sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error { return nil }); err != nil {
				t.Fatalf("RunInTx after panic: %v", err)
			}
		})

		t.Run("retries serialization failures", func(t *testing.T) {
			attempts := 0
			err := sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
				attempts++
				if _, err := tx.ExecContext(ctx, "INSERT INTO item (id, name) VALUES ($1, $2)", 10, "ten"); err != nil {
					return err
				}
				if attempts < 3 {
					return &pgconn.PgError{Code: "40001", Message: "could not serialize access"}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if attempts != 3 {
				t.Errorf("fn ran %d times, want 3", attempts)
			}
			if n := count(); n != 2 {
				t.Errorf("count = %d, want 2 (the retried insert committed once)", n)
			}
		})

		t.Run("gives up on constraint errors at once", func(t *testing.T) {
			attempts := 0
			err := sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
				attempts++
				_, err := tx.ExecContext(ctx, "INSERT INTO item (id, name) VALUES ($1, $2)", 1, "dup")
				return err
			})
			if !sqldb.IsUniqueViolation(err) {
				t.Fatalf("err = %v, want a unique violation", err)
			}
			if attempts != 1 {
				t.Errorf("fn ran %d times, want 1", attempts)
			}
		})
	})
}

// TestRunInTxRetriesRealConflicts makes the database itself report the
// conflict: a deadlock on PostgreSQL, a busy file on SQLite.
func TestRunInTxRetriesRealConflicts(t *testing.T) {
	ctx := context.Background()
	t.Run("postgres deadlock", func(t *testing.T) {
		db := sqldbtest.Open(t, sqldb.Postgres)
		if _, err := db.ExecContext(ctx, "CREATE TABLE acct (id INT PRIMARY KEY, n INT NOT NULL)"); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, "INSERT INTO acct VALUES (1, 0), (2, 0)"); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var both sync.WaitGroup
		both.Add(2)
		errs := make([]error, 2)
		for i, order := range [][2]int{{1, 2}, {2, 1}} {
			wg.Go(func() {
				first := true
				errs[i] = sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
					if _, err := tx.ExecContext(ctx, "UPDATE acct SET n = n + 1 WHERE id = $1", order[0]); err != nil {
						return err
					}
					if first { // make both hold their first lock before taking the second
						first = false
						both.Done()
						both.Wait()
					}
					_, err := tx.ExecContext(ctx, "UPDATE acct SET n = n + 1 WHERE id = $1", order[1])
					return err
				})
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("tx %d: %v", i, err)
			}
		}
		var total int
		if err := db.QueryRowContext(ctx, "SELECT sum(n) FROM acct").Scan(&total); err != nil {
			t.Fatal(err)
		}
		if total != 4 {
			t.Errorf("sum = %d, want 4: each transaction committed exactly once", total)
		}
	})
	t.Run("sqlite busy", func(t *testing.T) {
		url := sqldbtest.URL(t, sqldb.SQLite)
		a, err := sqldb.Open(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		// b stands for another process with a short busy timeout.
		b, err := sqldb.Open(ctx, url, sqldb.Options{BusyTimeout: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if _, err := a.ExecContext(ctx, "CREATE TABLE item (id INTEGER PRIMARY KEY)"); err != nil {
			t.Fatal(err)
		}
		holder, err := a.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := holder.ExecContext(ctx, "INSERT INTO item VALUES (1)"); err != nil {
			t.Fatal(err)
		}
		_, err = b.BeginTx(ctx, nil)
		if !sqldb.IsRetryable(err) {
			t.Fatalf("second writer got %v, want a retryable busy error", err)
		}
		done := make(chan error, 1)
		go func() {
			done <- sqldb.RunInTx(ctx, b, func(tx *sql.Tx) error {
				_, err := tx.ExecContext(ctx, "INSERT INTO item VALUES (2)")
				return err
			})
		}()
		if err := holder.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("RunInTx while another writer held the lock: %v", err)
		}
		var n int
		if err := a.QueryRowContext(ctx, "SELECT count(*) FROM item").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 2 {
			t.Errorf("count = %d, want 2", n)
		}
	})
}

// URL names the database without its password; the connection itself
// (LISTEN uses the URL) still has it.
func TestURLHidesThePassword(t *testing.T) {
	raw := sqldbtest.PostgresURL(t)
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(cmp.Or(u.User.Username(), "postgres"), "s3cret-pw") // trust auth takes any
	db, err := sqldb.Open(context.Background(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got := db.URL(); strings.Contains(got, "s3cret-pw") || !strings.Contains(got, u.Host) {
		t.Errorf("URL() = %q: want the server without the password", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := sqldb.Listen(ctx, db, "url_test"); err != nil {
		t.Fatalf("listen with the full URL: %v", err)
	}
}

// TestStalledTransactionEnds: a transaction whose process stops running
// without dying (frozen mid-transaction, holding row locks) would block
// every other writer of those rows for as long as the process lives. The
// server ends a session idle in a transaction after a limit, one minute
// unless the URL sets idle_in_transaction_session_timeout, so the others
// go on.
func TestStalledTransactionEnds(t *testing.T) {
	ctx := context.Background()
	base := sqldbtest.URL(t, sqldb.Postgres)
	db, err := sqldb.Open(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var limit string
	if err := db.QueryRowContext(ctx, `SHOW idle_in_transaction_session_timeout`).Scan(&limit); err != nil || limit != "1min" {
		t.Errorf("idle_in_transaction_session_timeout = %q (%v), want 1min by default", limit, err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL); INSERT INTO counter VALUES (1, 0)`); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("idle_in_transaction_session_timeout", "300")
	u.RawQuery = q.Encode()
	stalling, err := sqldb.Open(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer stalling.Close()
	tx, err := stalling.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `UPDATE counter SET n = n + 1 WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	// The transaction stalls, its row locked; another writer of the row
	// gets it once the server has ended the stalled session.
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := db.ExecContext(wctx, `UPDATE counter SET n = n + 10 WHERE id = 1`); err != nil {
		t.Fatalf("the other writer: %v", err)
	}
	if err := tx.Commit(); err == nil {
		t.Error("the stalled transaction committed after its session was ended")
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT n FROM counter WHERE id = 1`).Scan(&n); err != nil || n != 10 {
		t.Errorf("n = %d (%v), want 10: the stalled transaction rolled back", n, err)
	}
}
