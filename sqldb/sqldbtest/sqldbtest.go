// Package sqldbtest gives tests fresh, isolated databases of both dialects:
// an SQLite file in the test's temporary directory, or a schema of its own
// in the PostgreSQL database named by TEST_DATABASE_URL, dropped when the
// test ends. Without TEST_DATABASE_URL the PostgreSQL variants are skipped
// with a message, and fail when CI=true.
package sqldbtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/sysops-squad/sysops/internal/faultnet"
	"github.com/sysops-squad/sysops/internal/testenv"
	"github.com/sysops-squad/sysops/sqldb"
)

// EnvVar names the PostgreSQL server the tests use.
const EnvVar = "TEST_DATABASE_URL"

// Dialects lists the dialects every store runs its tests against.
var Dialects = []sqldb.Dialect{sqldb.SQLite, sqldb.Postgres}

// Run runs fn as one subtest per dialect, named for the dialect.
func Run(t *testing.T, fn func(t *testing.T, d sqldb.Dialect)) {
	t.Helper()
	for _, d := range Dialects {
		t.Run(string(d), func(t *testing.T) { fn(t, d) })
	}
}

// PostgresURL returns TEST_DATABASE_URL, or skips (locally) or fails (CI).
func PostgresURL(t testing.TB) string {
	t.Helper()
	return testenv.Require(t, EnvVar, "PostgreSQL")
}

// RandomName returns prefix followed by 12 random hex digits: a name for
// a schema, database or role that no other test uses.
func RandomName(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// URL returns the URL of a fresh, empty database of dialect d that lives
// as long as the test.
func URL(t testing.TB, d sqldb.Dialect) string {
	t.Helper()
	switch d {
	case sqldb.SQLite:
		return "sqlite:" + filepath.Join(t.TempDir(), "test.db")
	case sqldb.Postgres:
		base := PostgresURL(t)
		schema := RandomName("t_")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Fatalf("sqldbtest: connect %s: %v", sqldb.Redact(base), err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
			t.Fatalf("sqldbtest: create schema: %v", err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			conn, err := pgx.Connect(ctx, base)
			if err != nil {
				t.Errorf("sqldbtest: drop schema %s: %v", schema, err)
				return
			}
			defer conn.Close(ctx)
			if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
				t.Errorf("sqldbtest: drop schema %s: %v", schema, err)
			}
		})
		u, err := url.Parse(base)
		if err != nil {
			t.Fatalf("sqldbtest: parse %s: %v", EnvVar, err)
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String()
	}
	t.Fatalf("sqldbtest: unknown dialect %q", d)
	return ""
}

// Open opens a fresh database of dialect d, closed when the test ends.
func Open(t testing.TB, d sqldb.Dialect) *sqldb.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := sqldb.Open(ctx, URL(t, d))
	if err != nil {
		t.Fatalf("sqldbtest: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// OpenBehindProxy opens a fresh PostgreSQL database, as [Open], reached
// through a loopback proxy the test can cut and restore (a server outage
// as the client sees it: every connection reset, new ones refused).
func OpenBehindProxy(t testing.TB) (*sqldb.DB, *faultnet.Proxy) {
	t.Helper()
	u, err := url.Parse(URL(t, sqldb.Postgres))
	if err != nil {
		t.Fatal(err)
	}
	proxy := faultnet.Start(t, u.Host)
	u.Host = proxy.Addr()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := sqldb.Open(ctx, u.String())
	if err != nil {
		t.Fatalf("sqldbtest: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db, proxy
}

// DropProvisioned drops the databases and roles that sqldb.Provision
// created on the server base for services under prefix.
func DropProvisioned(t testing.TB, base, prefix string, services ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Errorf("sqldbtest: drop provisioned: %v", err)
		return
	}
	defer conn.Close(ctx)
	for _, s := range services {
		name := pgx.Identifier{prefix + s}.Sanitize()
		for _, q := range []string{"DROP DATABASE IF EXISTS " + name + " WITH (FORCE)", "DROP ROLE IF EXISTS " + name} {
			if _, err := conn.Exec(ctx, q); err != nil {
				t.Errorf("sqldbtest: %s: %v", q, err)
			}
		}
	}
}

// OpenRefusing opens a fresh database of dialect d, as [Open], with a
// switch that makes it refuse every write as a database does that has
// turned read-only — a PostgreSQL primary demoted in a failover, a file
// system remounted read-only — until it is switched back: refuse(true),
// then refuse(false). Reads go on working. On SQLite the writer
// connection is set query_only; on PostgreSQL see [RefusingURL], and
// refuse(false) returns once the pool no longer hands out the sessions
// it ended.
func OpenRefusing(t testing.TB, d sqldb.Dialect) (db *sqldb.DB, refuse func(bool)) {
	t.Helper()
	if d == sqldb.SQLite {
		db = Open(t, d)
		return db, func(on bool) {
			t.Helper()
			if _, err := db.Writer().ExecContext(context.Background(), fmt.Sprintf("PRAGMA query_only = %t", on)); err != nil {
				t.Fatalf("sqldbtest: refuse writes %t: %v", on, err)
			}
		}
	}
	raw, switchRole := RefusingURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := sqldb.Open(ctx, raw)
	if err != nil {
		t.Fatalf("sqldbtest: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db, func(on bool) {
		t.Helper()
		switchRole(on)
		if !on {
			// The pool pings a connection unused for a second before
			// handing it out (pgx) and drops it if dead: after this wait
			// the test's own next statements find no ended session.
			time.Sleep(1100 * time.Millisecond)
		}
	}
}

// RefusingURL returns the URL of a fresh PostgreSQL database, as [URL],
// reached under a login role of its own, and the switch of
// [OpenRefusing] for whatever process opens it: refuse(true) sets the
// role's default_transaction_read_only and ends its sessions, so that
// every pool's new ones refuse writes; refuse(false) undoes it.
func RefusingURL(t testing.TB) (string, func(bool)) {
	t.Helper()
	base := PostgresURL(t)
	u, err := url.Parse(URL(t, sqldb.Postgres))
	if err != nil {
		t.Fatal(err)
	}
	schema, role := u.Query().Get("search_path"), RandomName("r_")
	admin := func(stmts ...string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		for _, s := range stmts {
			if _, err := conn.Exec(ctx, s); err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
		}
		return nil
	}
	r := pgx.Identifier{role}.Sanitize()
	if err := admin("CREATE ROLE "+r+" LOGIN", "GRANT ALL ON SCHEMA "+pgx.Identifier{schema}.Sanitize()+" TO "+r); err != nil {
		t.Fatalf("sqldbtest: %v", err)
	}
	endSessions := "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = '" + role + "'"
	t.Cleanup(func() {
		if err := admin(endSessions, "DROP OWNED BY "+r+" CASCADE", "DROP ROLE "+r); err != nil {
			t.Errorf("sqldbtest: drop role: %v", err)
		}
	})
	u.User = url.User(role)
	return u.String(), func(on bool) {
		t.Helper()
		set := "ALTER ROLE " + r + " RESET default_transaction_read_only"
		if on {
			set = "ALTER ROLE " + r + " SET default_transaction_read_only = on"
		}
		if err := admin(set, endSessions); err != nil {
			t.Fatalf("sqldbtest: refuse writes %t: %v", on, err)
		}
	}
}
