package sqldb_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

// TestIsDataError: a value the column refuses is a data error in both
// dialects; a duplicate key, a syntax error and no error are not.
func TestIsDataError(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := sqldbtest.Open(t, d)
		ctx := context.Background()
		if _, err := db.ExecContext(ctx, `CREATE TABLE counted (n INTEGER PRIMARY KEY)`); err != nil {
			t.Fatal(err)
		}
		_, err := db.ExecContext(ctx, `INSERT INTO counted (n) VALUES ($1)`, "seven")
		if err == nil || !sqldb.IsDataError(err) {
			t.Errorf("a word for a whole number: %v, want a data error", err)
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO counted (n) VALUES (1)`); err != nil {
			t.Fatal(err)
		}
		_, err = db.ExecContext(ctx, `INSERT INTO counted (n) VALUES (1)`)
		if err == nil || sqldb.IsDataError(err) {
			t.Errorf("a duplicate key: %v, want an error that is not a data error", err)
		}
		_, err = db.ExecContext(ctx, `INSERT INTO nowhere VALUES (1)`)
		if err == nil || sqldb.IsDataError(err) {
			t.Errorf("an unknown table: %v, want an error that is not a data error", err)
		}
		if sqldb.IsDataError(nil) {
			t.Error("nil is a data error")
		}
	})
}

// TestIsUnavailable: a database that has turned read-only refuses writes
// with an error IsUnavailable recognizes, in both dialects, while reads go
// on; once it takes writes again they succeed. A data error, a duplicate
// key and a statement the database cannot run are not unavailability.
func TestIsUnavailable(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db, refuse := sqldbtest.OpenRefusing(t, d)
		ctx := context.Background()
		if _, err := db.ExecContext(ctx, `CREATE TABLE counted (n INTEGER PRIMARY KEY)`); err != nil {
			t.Fatal(err)
		}
		insert := func(n int) error {
			return sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
				_, err := tx.ExecContext(ctx, `INSERT INTO counted (n) VALUES ($1)`, n)
				return err
			})
		}
		if err := insert(1); err != nil {
			t.Fatal(err)
		}
		if err := insert(1); err == nil || sqldb.IsUnavailable(err) {
			t.Errorf("a duplicate key: %v, want an error that is not unavailability", err)
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO counted (n) VALUES ($1)`, "seven"); err == nil || sqldb.IsUnavailable(err) {
			t.Errorf("a data error: %v, want an error that is not unavailability", err)
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO nowhere VALUES (1)`); err == nil || sqldb.IsUnavailable(err) {
			t.Errorf("an unknown table: %v, want an error that is not unavailability", err)
		}
		if sqldb.IsUnavailable(nil) || sqldb.IsUnavailable(context.Canceled) {
			t.Error("nil or a cancelled context is unavailability")
		}

		refuse(true)
		err := insert(2)
		if err == nil || !sqldb.IsUnavailable(err) {
			t.Fatalf("a write to a read-only database: %v, want unavailability", err)
		}
		if sqldb.IsRetryable(err) {
			t.Errorf("a write to a read-only database is a conflict to re-run at once: %v", err)
		}
		var n int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM counted`).Scan(&n); err != nil || n != 1 {
			t.Errorf("read while refusing writes: %d rows, %v; want 1, nil", n, err)
		}
		refuse(false)
		if err := insert(2); err != nil {
			t.Errorf("a write once the database takes writes again: %v", err)
		}
	})
}

// TestRunInTxOutlivesEndedSessions: when the server ends every pooled
// session at once (a restart, a failover, pg_terminate_backend), the
// next transactions run on new connections instead of failing on the
// dead ones, each once.
func TestRunInTxOutlivesEndedSessions(t *testing.T) {
	db := sqldbtest.Open(t, sqldb.Postgres)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `CREATE TABLE counted (n INTEGER PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	// Fill the pool with connections and note their sessions. They are
	// taken twice: the pool pings a connection it hands out again after
	// a second or more unused (pgx), which would find a dead one out, and
	// the first hand-out of a new one counts as such.
	var pids []int
	for round := range 2 {
		var conns []*sql.Conn
		for range 4 {
			c, err := db.Writer().Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var pid int
			if err := c.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
			if round == 1 {
				pids = append(pids, pid)
			}
		}
		for _, c := range conns {
			c.Close()
		}
	}
	admin, err := sql.Open("pgx", sqldbtest.PostgresURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	var ended int
	if err := admin.QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM unnest($1::int[]) AS pid`, pids).Scan(&ended); err != nil || ended != len(pids) {
		t.Fatalf("ended %d of %d sessions: %v", ended, len(pids), err)
	}
	for i := range 4 {
		err := sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO counted (n) VALUES ($1)`, i)
			return err
		})
		if err != nil {
			t.Fatalf("transaction %d after the sessions ended: %v", i, err)
		}
	}
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM counted`).Scan(&n); err != nil || n != 4 {
		t.Errorf("%d rows (%v), want 4", n, err)
	}
}

// TestIsUnavailableWhenTheServerIsCutOff: a statement on a connection the
// network cut (reset under it), and one that needs a new connection while
// the server cannot be reached, both fail with unavailability.
func TestIsUnavailableWhenTheServerIsCutOff(t *testing.T) {
	db, proxy := sqldbtest.OpenBehindProxy(t)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `CREATE TABLE counted (n INTEGER PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	proxy.Cut()
	for i := range 3 {
		_, err := db.ExecContext(ctx, `INSERT INTO counted (n) VALUES ($1)`, i)
		if err == nil || !sqldb.IsUnavailable(err) {
			t.Errorf("statement %d with the server cut off: %v, want unavailability", i, err)
		}
	}
}
