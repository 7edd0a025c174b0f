package main

import (
	"context"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sysops-squad/sysops/internal/svctest"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

type ownershipFile struct {
	Tables []struct {
		Table, Owner, Scenario, Technique, Reason string
	}
	EveryService []struct {
		Table, Scenario, Technique, Reason string
	} `yaml:"every_service"`
}

func readOwnership(t *testing.T) ownershipFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "ownership.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var f ownershipFile
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("ownership.yaml: %v", err)
	}
	return f
}

func tablesOf(t *testing.T, dbURL string) []string {
	t.Helper()
	ctx := context.Background()
	db, err := sqldb.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	q := `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'`
	if db.Dialect() == sqldb.Postgres {
		q = `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()`
	}
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	return out
}

// TestOwnershipFileMatchesTheDatabases: ownership.yaml lists every table of
// every service's database under that service, and nothing else.
func TestOwnershipFileMatchesTheDatabases(t *testing.T) {
	f := readOwnership(t)
	owned := map[string][]string{} // service -> tables
	for _, e := range f.Tables {
		if e.Table == "" || e.Owner == "" || e.Scenario == "" || e.Technique == "" || e.Reason == "" {
			t.Errorf("ownership.yaml: entry %+v lacks table, owner, scenario, technique or reason", e)
		}
		if !slices.Contains([]string{"single", "common", "joint", "infrastructure"}, e.Scenario) {
			t.Errorf("ownership.yaml: %s has scenario %q", e.Table, e.Scenario)
		}
		owned[e.Owner] = append(owned[e.Owner], e.Table)
	}
	everywhere := func(table string) bool {
		for _, e := range f.EveryService {
			if e.Table == table || (strings.HasPrefix(e.Table, "*") && strings.HasSuffix(table, strings.TrimPrefix(e.Table, "*"))) {
				return true
			}
		}
		return false
	}
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		owned := maps.Clone(owned)
		env := svctest.New(t, d, registry()...)
		for _, s := range registry() {
			got := tablesOf(t, env.DatabaseURL(s.Name))
			for _, table := range got {
				if !slices.Contains(owned[s.Name], table) && !everywhere(table) {
					t.Errorf("%s's database has table %s, not listed under owner %s in ownership.yaml", s.Name, table, s.Name)
				}
			}
			for _, table := range owned[s.Name] {
				if !slices.Contains(got, table) {
					t.Errorf("ownership.yaml gives %s to %s, whose database has no such table (it has %v)", table, s.Name, got)
				}
			}
			delete(owned, s.Name)
		}
		for owner := range owned {
			t.Errorf("ownership.yaml names owner %q, which is not a service", owner)
		}
	})
}

// TestServicesCannotReachEachOthersTables: each service reaches only its own
// database, with its own credentials.
func TestServicesCannotReachEachOthersTables(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		base := t.TempDir()
		prefix := ""
		if d == sqldb.Postgres {
			base = sqldbtest.PostgresURL(t)
			prefix = sqldbtest.RandomName("own") + "_"
			t.Cleanup(func() { sqldbtest.DropProvisioned(t, base, prefix, "customer", "ticket") })
		}
		urls := map[string]string{}
		for _, s := range registry() {
			if s.Name != "customer" && s.Name != "ticket" {
				continue
			}
			u, err := sqldb.Provision(ctx, base, s.Name, sqldb.ProvisionConfig{Prefix: prefix})
			if err != nil {
				t.Fatal(err)
			}
			db, err := sqldb.Open(ctx, u)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := sqldb.Migrate(ctx, db, s.Name, s.Migrations); err != nil {
				t.Fatal(err)
			}
			db.Close()
			urls[s.Name] = u
		}

		// Customer's connection does not see ticket's table.
		cust, err := sqldb.Open(ctx, urls["customer"])
		if err != nil {
			t.Fatal(err)
		}
		defer cust.Close()
		_, err = cust.ExecContext(ctx, `INSERT INTO ticket (id, customer_id, description, priority, skill, zip, status, created_at, updated_at)
			VALUES ('t', 'c', 'd', 'low', 'printer', '10001', 'open', 0, 0)`)
		if err == nil || !(strings.Contains(err.Error(), "does not exist") || strings.Contains(err.Error(), "no such table")) {
			t.Errorf("customer wrote ticket's table: err = %v", err)
		}

		if d != sqldb.Postgres {
			if filepath.Dir(strings.TrimPrefix(urls["customer"], "sqlite:")) != base || urls["customer"] == urls["ticket"] {
				t.Errorf("SQLite files: customer %s, ticket %s", urls["customer"], urls["ticket"])
			}
			return
		}
		// Customer's role, pointed at ticket's database, is refused.
		tu, err := url.Parse(urls["ticket"])
		if err != nil {
			t.Fatal(err)
		}
		cu, err := url.Parse(urls["customer"])
		if err != nil {
			t.Fatal(err)
		}
		tu.User = cu.User
		intruder, err := sqldb.Open(ctx, tu.String())
		if err == nil {
			_, err = intruder.ExecContext(ctx, `INSERT INTO ticket (id, customer_id, description, priority, skill, zip, status, created_at, updated_at)
				VALUES ('t', 'c', 'd', 'low', 'printer', '10001', 'open', 0, 0)`)
			intruder.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("customer's role wrote ticket's database: err = %v", err)
		}
	})
}
