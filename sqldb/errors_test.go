package sqldb_test

import (
	"context"
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
