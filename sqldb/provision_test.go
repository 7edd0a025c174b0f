package sqldb_test

import (
	"context"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

func TestProvisionSQLite(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	u, err := sqldb.Provision(ctx, dir, "location")
	if err != nil {
		t.Fatal(err)
	}
	if want := "sqlite:" + filepath.Join(dir, "location.db"); u != want {
		t.Errorf("url = %q, want %q", u, want)
	}
	if u2, err := sqldb.Provision(ctx, "sqlite:"+dir, "location"); err != nil || u2 != u {
		t.Errorf("second Provision = %q, %v; want the same url", u2, err)
	}
	other, err := sqldb.Provision(ctx, dir, "ticket")
	if err != nil {
		t.Fatal(err)
	}
	if other == u {
		t.Error("two services share one database file")
	}
}

func TestProvisionErrors(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, base, service, want string }{
		{"data dir under a file", filepath.Join(file, "data"), "location", "data directory"},
		{"bad service name", t.TempDir(), "../etc", "service name"},
		{"unknown scheme", "mysql://localhost/x", "location", "unknown database URL scheme"},
		{"unreachable postgres", "postgres://postgres@127.0.0.1:1/test?connect_timeout=2", "location", "cannot connect to postgres"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := sqldb.Provision(ctx, tt.base, tt.service)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans several lines: %q", err)
			}
		})
	}
}

// TestProvisionPostgresIsolation checks the ownership guarantee: each
// service logs in as its own role to its own database, and no service's
// role can reach another service's database.
func TestProvisionPostgresIsolation(t *testing.T) {
	base := sqldbtest.PostgresURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	prefix := sqldbtest.RandomName("p") + "_"
	cfg := sqldb.ProvisionConfig{Prefix: prefix}
	t.Cleanup(func() { sqldbtest.DropProvisioned(t, base, prefix, "alpha", "beta") })

	// Several processes may provision at once.
	var wg sync.WaitGroup
	urls := make([]string, 4)
	errs := make([]error, 4)
	for i := range urls {
		wg.Go(func() { urls[i], errs[i] = sqldb.Provision(ctx, base, "alpha", cfg) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent Provision %d: %v", i, err)
		}
		if urls[i] != urls[0] {
			t.Fatalf("concurrent Provision returned %q and %q", urls[i], urls[0])
		}
	}
	alphaURL := urls[0]
	betaURL, err := sqldb.Provision(ctx, base, "beta", cfg)
	if err != nil {
		t.Fatal(err)
	}

	alpha, err := sqldb.Open(ctx, alphaURL)
	if err != nil {
		t.Fatalf("alpha cannot open its own database: %v", err)
	}
	defer alpha.Close()
	var user, dbname string
	if err := alpha.QueryRowContext(ctx, "SELECT current_user, current_database()").Scan(&user, &dbname); err != nil {
		t.Fatal(err)
	}
	if user != prefix+"alpha" || dbname != prefix+"alpha" {
		t.Errorf("alpha is %s in %s, want %salpha in %salpha", user, dbname, prefix, prefix)
	}
	if _, err := alpha.ExecContext(ctx, "CREATE TABLE mine (id INT PRIMARY KEY)"); err != nil {
		t.Fatalf("alpha cannot create a table in its own database: %v", err)
	}

	// alpha's role, aimed at beta's database, is refused.
	u, _ := url.Parse(betaURL)
	au, _ := url.Parse(alphaURL)
	u.User = au.User
	intruder, err := sqldb.Open(ctx, u.String())
	if err == nil {
		intruder.Close()
		t.Fatal("alpha's role connected to beta's database")
	}
	if !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("intrusion refused with %v, want permission denied", err)
	}
}

// TestProvisionPostgresPassword checks that with a password in the base URL
// each role gets a derived password that the returned URL carries.
func TestProvisionPostgresPassword(t *testing.T) {
	base := sqldbtest.PostgresURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	prefix := sqldbtest.RandomName("p") + "_"
	t.Cleanup(func() { sqldbtest.DropProvisioned(t, base, prefix, "gamma") })
	u, _ := url.Parse(base)
	u.User = url.UserPassword(u.User.Username(), "admin-secret")
	got, err := sqldb.Provision(ctx, u.String(), "gamma", sqldb.ProvisionConfig{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	gu, _ := url.Parse(got)
	pw, ok := gu.User.Password()
	if !ok || len(pw) != 64 || strings.Contains(pw, "admin-secret") {
		t.Errorf("role password %q: want a 64-hex-digit derived password", pw)
	}
	again, err := sqldb.Provision(ctx, u.String(), "gamma", sqldb.ProvisionConfig{Prefix: prefix})
	if err != nil || again != got {
		t.Errorf("second Provision = %q, %v; want the same URL and password", again, err)
	}
}

// TestLocateSQLite checks that Locate finds what Provision made and
// creates nothing where there is nothing.
func TestLocateSQLite(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	_, err := sqldb.Locate(ctx, dir, "alpha")
	if !errors.Is(err, sqldb.ErrNoDatabase) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "alpha.db") {
		t.Fatalf("Locate in a missing directory: %v, want ErrNoDatabase naming %s and alpha.db", err, dir)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Locate created %s (%v)", dir, err)
	}
	made, err := sqldb.Provision(ctx, dir, "alpha")
	if err != nil {
		t.Fatal(err)
	}
	db, err := sqldb.Open(ctx, made)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	for _, base := range []string{dir, "sqlite:" + dir} {
		if got, err := sqldb.Locate(ctx, base, "alpha"); err != nil || got != made {
			t.Errorf("Locate(%s) = %q, %v; want %q", base, got, err, made)
		}
	}
	if _, err := sqldb.Locate(ctx, dir, "beta"); !errors.Is(err, sqldb.ErrNoDatabase) {
		t.Errorf("Locate of a service never provisioned: %v", err)
	}
	if _, err := sqldb.Locate(ctx, "mysql://x", "alpha"); !errors.Is(err, sqldb.ErrUnknownScheme) {
		t.Errorf("unknown scheme: %v", err)
	}
}

// TestLocatePostgres checks that Locate returns the URL Provision did,
// password included, and creates no role or database where there is none.
func TestLocatePostgres(t *testing.T) {
	base := sqldbtest.PostgresURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	prefix := sqldbtest.RandomName("l") + "_"
	cfg := sqldb.ProvisionConfig{Prefix: prefix}
	t.Cleanup(func() { sqldbtest.DropProvisioned(t, base, prefix, "delta") })

	_, err := sqldb.Locate(ctx, base, "delta", cfg)
	if !errors.Is(err, sqldb.ErrNoDatabase) || !strings.Contains(err.Error(), prefix+"delta") {
		t.Fatalf("Locate before Provision: %v, want ErrNoDatabase naming %sdelta", err, prefix)
	}
	admin, err := sqldb.Open(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	var roles, dbs int
	if err := admin.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM pg_roles WHERE rolname = $1),
		(SELECT count(*) FROM pg_database WHERE datname = $1)`, prefix+"delta").Scan(&roles, &dbs); err != nil {
		t.Fatal(err)
	}
	if roles != 0 || dbs != 0 {
		t.Errorf("Locate created %d roles and %d databases", roles, dbs)
	}

	u, _ := url.Parse(base)
	u.User = url.UserPassword(u.User.Username(), "admin-secret")
	for _, b := range []string{base, u.String()} {
		made, err := sqldb.Provision(ctx, b, "delta", cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := sqldb.Locate(ctx, b, "delta", cfg); err != nil || got != made {
			t.Errorf("Locate = %q, %v; want Provision's %q", sqldb.Redact(got), err, sqldb.Redact(made))
		}
	}
}
