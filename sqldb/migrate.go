package sqldb

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"regexp"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

var namePattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,39}$`)

// MigrationResult says what [Migrate] did.
type MigrationResult struct {
	// Applied lists the migrations applied by this call, oldest first.
	Applied []string
	// Version is the schema version after the call.
	Version int64
	// Latest is the version of this build's newest migration. A Version
	// above it means that a newer build migrated the database (a rolling
	// upgrade under way, or one rolled back): this build runs on that
	// schema as long as the newer migrations kept what it uses, which is
	// how migrations are to be written (expand first, contract later).
	Latest int64
}

// Ahead reports whether a newer build than this one migrated the schema.
func (r MigrationResult) Ahead() bool { return r.Version > r.Latest }

// Migrate brings db's schema up to date with the goose SQL migrations in
// fsys (files NNNNN_name.sql with -- +goose Up / Down sections). If fsys has
// a directory named for db's dialect ("sqlite" or "postgres"), that
// directory is used; otherwise fsys's root is. The applied versions are
// recorded in the table "<set>_schema", so that several migration sets (a
// service's own, and those of the toolkit packages it uses) live side by
// side in one database. On PostgreSQL concurrent callers serialize on an
// advisory lock; on SQLite a caller whose migration failed because
// another applied it meanwhile runs again from the version it finds.
//
// A failing migration is rolled back and reported with its file name; the
// caller should stop.
func Migrate(ctx context.Context, db *DB, set string, fsys fs.FS) (MigrationResult, error) {
	p, err := newProvider(db, set, fsys, true)
	if err != nil {
		return MigrationResult{}, err
	}
	var results []*goose.MigrationResult // applied by this call, over its attempts
	var failed *goose.PartialError
	for attempt := 1; ; attempt++ {
		before, _ := p.GetDBVersion(ctx) // 0 before the first run made its table
		var run []*goose.MigrationResult
		run, err = p.Up(ctx)
		failed, _ = errors.AsType[*goose.PartialError](err)
		if failed != nil {
			run = failed.Applied
		}
		results = append(results, run...)
		if err == nil || failed == nil || attempt == 5 {
			break
		}
		// SQLite has no lock to take around a run: another process that
		// migrates the same file at the same time can apply a migration
		// this one read as pending, which then fails ("table already
		// exists"). If the version moved past what this run applied, that
		// is what happened: run again from there.
		reached := before
		if len(run) > 0 {
			reached = run[len(run)-1].Source.Version
		}
		if after, aerr := p.GetDBVersion(ctx); aerr != nil || after <= reached {
			break
		}
	}
	var res MigrationResult
	if failed != nil {
		err = fmt.Errorf("%s: %w", failed.Failed.Source.Path, failed.Err)
	}
	for _, r := range results {
		res.Applied = append(res.Applied, r.Source.Path)
	}
	if err != nil {
		return res, fmt.Errorf("sqldb: migrate %s: %w", set, oneLine(err))
	}
	if res.Version, res.Latest, err = p.GetVersions(ctx); err != nil {
		return res, fmt.Errorf("sqldb: migrate %s: read version: %w", set, oneLine(err))
	}
	return res, nil
}

// newProvider returns goose's provider of set's migrations in fsys (its
// dialect's directory if it has one) on db, taking PostgreSQL's advisory
// lock around runs if locked.
func newProvider(db *DB, set string, fsys fs.FS, locked bool) (*goose.Provider, error) {
	if !namePattern.MatchString(set) {
		return nil, fmt.Errorf("sqldb: migration set name %q must match %s", set, namePattern)
	}
	if sub, err := fs.Sub(fsys, string(db.dialect)); err == nil {
		if files, err := fs.Glob(sub, "*.sql"); err == nil && len(files) > 0 {
			fsys = sub
		}
	}
	opts := []goose.ProviderOption{
		goose.WithTableName(set + "_schema"),
		goose.WithDisableGlobalRegistry(true),
	}
	dialect := goose.DialectSQLite3
	if db.dialect == Postgres {
		dialect = goose.DialectPostgres
		if locked {
			locker, err := lock.NewPostgresSessionLocker()
			if err != nil {
				return nil, fmt.Errorf("sqldb: migrate %s: %w", set, err)
			}
			opts = append(opts, goose.WithSessionLocker(locker))
		}
	}
	p, err := goose.NewProvider(dialect, db.writer, fsys, opts...)
	if err != nil {
		return nil, fmt.Errorf("sqldb: migrate %s: %w", set, oneLine(err))
	}
	return p, nil
}

// ErrSchemaVersion: a database's schema is not the one a build's
// migrations make. See [CheckVersion].
var ErrSchemaVersion = errors.New("sqldb: schema version")

// CheckVersion reports whether db's schema of the migration set is at the
// last of the migrations in fsys, changing nothing: no table is created
// and no migration runs. A tool that reads or repairs a service's database
// while the service may be running (an operator's command line) checks
// this instead of calling [Migrate], which would change the schema under a
// running service of another build. The error wraps [ErrSchemaVersion]
// and says which side is behind.
func CheckVersion(ctx context.Context, db *DB, set string, fsys fs.FS) error {
	p, err := newProvider(db, set, fsys, false)
	if err != nil {
		return err
	}
	table := set + "_schema"
	var exists bool
	q := `SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?)`
	if db.dialect == Postgres {
		q = `SELECT to_regclass($1) IS NOT NULL`
	}
	if err := db.reader.QueryRowContext(ctx, q, table).Scan(&exists); err != nil {
		return fmt.Errorf("sqldb: check %s schema: %w", set, oneLine(err))
	}
	if !exists {
		return fmt.Errorf("%w: the database has no %s schema: the service that owns it has not run on it", ErrSchemaVersion, set)
	}
	current, target, err := p.GetVersions(ctx)
	if err != nil {
		return fmt.Errorf("sqldb: check %s schema: %w", set, oneLine(err))
	}
	switch {
	case current < target:
		return fmt.Errorf("%w: the %s schema is at version %d and this build's at %d: start the service of this build (it migrates as it starts), then try again",
			ErrSchemaVersion, set, current, target)
	case current > target:
		return fmt.Errorf("%w: the %s schema is at version %d, newer than this build's %d: use the build the service runs",
			ErrSchemaVersion, set, current, target)
	}
	return nil
}
