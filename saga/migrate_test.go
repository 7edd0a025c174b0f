package saga_test

import (
	"context"
	"encoding/json"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/pressly/goose/v3"

	"github.com/sysops-squad/sysops/saga"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

// A log written before steps moved into the saga row (migration 3) reads
// back the same after it, and migrating down puts the step rows back.
func TestStepsMoveIntoTheSagaRow(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := sqldbtest.Open(t, d)
		all, err := fs.Sub(saga.Migrations(), string(d))
		if err != nil {
			t.Fatal(err)
		}
		old := fstest.MapFS{}
		for _, name := range []string{"00001_saga.sql", "00002_saga_cancel_requested.sql"} {
			b, err := fs.ReadFile(all, name)
			if err != nil {
				t.Fatal(err)
			}
			old[name] = &fstest.MapFile{Data: b}
		}
		if _, err := sqldb.Migrate(ctx, db, saga.MigrationSet, old); err != nil {
			t.Fatal(err)
		}
		at := time.Date(2026, 11, 25, 3, 4, 5, 6000, time.UTC)
		if _, err := db.ExecContext(ctx, `INSERT INTO saga (id, definition, version, input, state, reason, deadline_at, next_run_at,
			created_at, updated_at) VALUES ('s1', 'd', 2, '{"x":1}', 'compensating', 'step b failed', $1, $1, $1, $1),
			('s2', 'd', 2, 'null', 'running', '', $1, $1, $1, $1)`, at.UnixMicro()); err != nil {
			t.Fatal(err)
		}
		type row struct {
			SagaID, Name, Status, Output, LastError string
			Idx, Attempts, CompAttempts             int
			UpdatedAt                               int64
		}
		rows := []row{
			{"s1", "a", "compensating", `{"id":"t-1","n":[1,2]}`, "", 0, 1, 2, at.UnixMicro()},
			{"s1", "b", "failed", "", "said \"no\"\nand\tmore", 1, 3, 0, at.UnixMicro() + 1},
		}
		for _, r := range slices.Backward(rows) { // the migration orders them
			if _, err := db.ExecContext(ctx, `INSERT INTO saga_step (saga_id, idx, name, status, attempts, comp_attempts, output,
				last_error, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
				r.SagaID, r.Idx, r.Name, r.Status, r.Attempts, r.CompAttempts, r.Output, r.LastError, r.UpdatedAt); err != nil {
				t.Fatal(err)
			}
		}

		if _, err := sqldb.Migrate(ctx, db, saga.MigrationSet, saga.Migrations()); err != nil {
			t.Fatal(err)
		}
		s, err := saga.Get(ctx, db, "s1")
		if err != nil {
			t.Fatal(err)
		}
		want := []saga.StepRecord{
			{Index: 0, Name: "a", Status: saga.StepCompensating, Attempts: 1, CompensationAttempts: 2,
				Output: json.RawMessage(`{"id":"t-1","n":[1,2]}`), UpdatedAt: at},
			{Index: 1, Name: "b", Status: saga.StepFailed, Attempts: 3, LastError: "said \"no\"\nand\tmore", UpdatedAt: at.Add(time.Microsecond)},
		}
		if diff := cmp.Diff(want, s.Steps); diff != "" {
			t.Errorf("steps after the migration (-want +got):\n%s", diff)
		}
		if s.State != saga.Compensating || s.Reason != "step b failed" || string(s.Input) != `{"x":1}` {
			t.Errorf("saga after the migration: %+v", s)
		}
		if s2, err := saga.Get(ctx, db, "s2"); err != nil || len(s2.Steps) != 0 {
			t.Errorf("a saga without steps: %+v, %v", s2, err)
		}

		if d == sqldb.Postgres { // migration 4: the log is vacuumed early
			var opts string
			if err := db.QueryRowContext(ctx, `SELECT array_to_string(reloptions, ',') FROM pg_class WHERE relname = 'saga'`).Scan(&opts); err != nil ||
				!strings.Contains(opts, "autovacuum_vacuum_scale_factor=0.01") {
				t.Errorf("saga table options %q (%v)", opts, err)
			}
		}

		// And back down.
		dialect := goose.DialectSQLite3
		if d == sqldb.Postgres {
			dialect = goose.DialectPostgres
		}
		p, err := goose.NewProvider(dialect, db.Writer(), all, goose.WithTableName(saga.MigrationSet+"_schema"),
			goose.WithDisableGlobalRegistry(true))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.DownTo(ctx, 2); err != nil {
			t.Fatal(err)
		}
		got := []row{}
		q, err := db.QueryContext(ctx, `SELECT saga_id, name, status, output, last_error, idx, attempts, comp_attempts, updated_at
			FROM saga_step ORDER BY saga_id, idx`)
		if err != nil {
			t.Fatal(err)
		}
		defer q.Close()
		for q.Next() {
			var r row
			if err := q.Scan(&r.SagaID, &r.Name, &r.Status, &r.Output, &r.LastError, &r.Idx, &r.Attempts, &r.CompAttempts, &r.UpdatedAt); err != nil {
				t.Fatal(err)
			}
			got = append(got, r)
		}
		if diff := cmp.Diff(rows, got); diff != "" {
			t.Errorf("step rows after migrating down (-want +got):\n%s", diff)
		}
	})
}
