package sqldb_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

func migration(up, down string) *fstest.MapFile {
	return &fstest.MapFile{Data: []byte("-- +goose Up\n" + up + "\n-- +goose Down\n" + down + "\n")}
}

func TestMigrate(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := sqldbtest.Open(t, d)
		fsys := fstest.MapFS{
			"00001_widget.sql":   migration("CREATE TABLE widget (id INTEGER PRIMARY KEY);", "DROP TABLE widget;"),
			"00002_colour.sql":   migration("ALTER TABLE widget ADD COLUMN colour TEXT;", "ALTER TABLE widget DROP COLUMN colour;"),
			"README.md":          &fstest.MapFile{Data: []byte("not a migration")},
			"postgres/.keep":     &fstest.MapFile{}, // an empty dialect directory does not hide the root
			"unrelated/note.txt": &fstest.MapFile{Data: []byte("x")},
		}
		res, err := sqldb.Migrate(ctx, db, "widgets", fsys)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"00001_widget.sql", "00002_colour.sql"}, res.Applied); diff != "" {
			t.Errorf("applied (-want +got):\n%s", diff)
		}
		if res.Version != 2 {
			t.Errorf("version = %d, want 2", res.Version)
		}
		if _, err := db.ExecContext(ctx, "INSERT INTO widget (id, colour) VALUES (1, 'red')"); err != nil {
			t.Fatalf("schema not in place: %v", err)
		}

		again, err := sqldb.Migrate(ctx, db, "widgets", fsys)
		if err != nil {
			t.Fatal(err)
		}
		if len(again.Applied) != 0 || again.Version != 2 {
			t.Errorf("second run = %+v, want nothing applied at version 2", again)
		}

		// Another set in the same database keeps its own version table.
		other := fstest.MapFS{"00001_gadget.sql": migration("CREATE TABLE gadget (id INTEGER PRIMARY KEY);", "DROP TABLE gadget;")}
		res, err = sqldb.Migrate(ctx, db, "gadgets", other)
		if err != nil {
			t.Fatal(err)
		}
		if res.Version != 1 || len(res.Applied) != 1 {
			t.Errorf("gadgets = %+v, want one migration at version 1", res)
		}
	})
}

func TestMigratePerDialectDirectory(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := sqldbtest.Open(t, d)
		fsys := fstest.MapFS{
			"sqlite/00001_t.sql":   migration("CREATE TABLE t (id INTEGER PRIMARY KEY, made_by TEXT DEFAULT 'sqlite');", "DROP TABLE t;"),
			"postgres/00001_t.sql": migration("CREATE TABLE t (id BIGSERIAL PRIMARY KEY, made_by TEXT DEFAULT 'postgres');", "DROP TABLE t;"),
		}
		if _, err := sqldb.Migrate(ctx, db, "t", fsys); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, "INSERT INTO t (id) VALUES (1)"); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := db.QueryRowContext(ctx, "SELECT made_by FROM t").Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != string(d) {
			t.Errorf("migrations from %q ran, want %q", got, d)
		}
	})
}

func TestMigrateFailure(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := sqldbtest.Open(t, d)
		fsys := fstest.MapFS{
			"00001_ok.sql":     migration("CREATE TABLE ok (id INTEGER PRIMARY KEY);", "DROP TABLE ok;"),
			"00002_broken.sql": migration("CREATE TABLE broken (id INTEGER PRIMARY KEY);\nCREATE TABLE ok (id INTEGER);", "SELECT 1;"),
		}
		res, err := sqldb.Migrate(ctx, db, "broken", fsys)
		if err == nil {
			t.Fatal("Migrate succeeded, want the error of 00002_broken.sql")
		}
		if !strings.Contains(err.Error(), "00002_broken.sql") {
			t.Errorf("error %q does not name the failing file", err)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("error spans several lines: %q", err)
		}
		if diff := cmp.Diff([]string{"00001_ok.sql"}, res.Applied); diff != "" {
			t.Errorf("applied (-want +got):\n%s", diff)
		}
		// The failed migration left nothing behind.
		if _, err := db.ExecContext(ctx, "INSERT INTO broken (id) VALUES (1)"); err == nil {
			t.Error("table of the failed migration exists; it must have been rolled back")
		}
	})
}

func TestMigrateRejectsBadSetName(t *testing.T) {
	db := sqldbtest.Open(t, sqldb.SQLite)
	if _, err := sqldb.Migrate(context.Background(), db, "Robert'); DROP", fstest.MapFS{}); err == nil {
		t.Fatal("Migrate accepted a set name that is not an identifier")
	}
}

// TestCheckVersion checks that CheckVersion tells a schema behind, at and
// ahead of a build's migrations apart, and changes nothing.
func TestCheckVersion(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := sqldbtest.Open(t, d)
		v1 := fstest.MapFS{
			"00001_widget.sql": migration("CREATE TABLE widget (id INTEGER PRIMARY KEY);", "DROP TABLE widget;"),
		}
		v2 := fstest.MapFS{
			"00001_widget.sql": v1["00001_widget.sql"],
			"00002_colour.sql": migration("ALTER TABLE widget ADD COLUMN colour TEXT;", "ALTER TABLE widget DROP COLUMN colour;"),
		}
		want := func(what string, err error, words ...string) {
			t.Helper()
			if !errors.Is(err, sqldb.ErrSchemaVersion) {
				t.Errorf("%s: %v, want ErrSchemaVersion", what, err)
				return
			}
			for _, w := range words {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s: %q does not mention %q", what, err, w)
				}
			}
		}
		want("never migrated", sqldb.CheckVersion(ctx, db, "widgets", v2), "no widgets schema")
		// The check created no version table: the first Migrate applies
		// everything, as on a fresh database.
		res, err := sqldb.Migrate(ctx, db, "widgets", v1)
		if err != nil || len(res.Applied) != 1 {
			t.Fatalf("migrate to 1 after the check: %+v, %v", res, err)
		}
		want("behind", sqldb.CheckVersion(ctx, db, "widgets", v2), "version 1", "this build's at 2", "start the service")
		if _, err := db.ExecContext(ctx, "INSERT INTO widget (id, colour) VALUES (1, 'red')"); err == nil {
			t.Error("the check migrated the schema: column colour exists")
		}
		if _, err := sqldb.Migrate(ctx, db, "widgets", v2); err != nil {
			t.Fatal(err)
		}
		if err := sqldb.CheckVersion(ctx, db, "widgets", v2); err != nil {
			t.Errorf("at the build's version: %v", err)
		}
		want("ahead", sqldb.CheckVersion(ctx, db, "widgets", v1), "version 2", "newer than this build's 1")
		if err := sqldb.CheckVersion(ctx, db, "Bad-Name", v1); err == nil || errors.Is(err, sqldb.ErrSchemaVersion) {
			t.Errorf("bad set name: %v", err)
		}
	})
}

// TestMigrateConcurrently: replicas of a service starting at once, each
// with its own handle, migrate one database: each migration is applied
// once and every replica starts.
func TestMigrateConcurrently(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		first := sqldbtest.Open(t, d)
		fsys := fstest.MapFS{
			"00001_widget.sql": migration("CREATE TABLE widget (id INTEGER PRIMARY KEY);", "DROP TABLE widget;"),
			"00002_colour.sql": migration("ALTER TABLE widget ADD COLUMN colour TEXT;", "ALTER TABLE widget DROP COLUMN colour;"),
			"00003_size.sql":   migration("ALTER TABLE widget ADD COLUMN size INTEGER;", "ALTER TABLE widget DROP COLUMN size;"),
		}
		const replicas = 4
		errs := make([]error, replicas)
		applied := make([]int, replicas)
		var wg sync.WaitGroup
		for i := range replicas {
			db := first
			if i > 0 {
				var err error
				if db, err = sqldb.Open(ctx, first.URL()); err != nil {
					t.Fatal(err)
				}
				defer db.Close()
			}
			wg.Go(func() {
				res, err := sqldb.Migrate(ctx, db, "widgets", fsys)
				errs[i], applied[i] = err, len(res.Applied)
			})
		}
		wg.Wait()
		total := 0
		for i, err := range errs {
			if err != nil {
				t.Errorf("replica %d: %v", i, err)
			}
			total += applied[i]
		}
		if total != 3 {
			t.Errorf("migrations applied %d times in all (%v), want each once", total, applied)
		}
	})
}
