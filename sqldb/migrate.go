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
}

// Migrate brings db's schema up to date with the goose SQL migrations in
// fsys (files NNNNN_name.sql with -- +goose Up / Down sections). If fsys has
// a directory named for db's dialect ("sqlite" or "postgres"), that
// directory is used; otherwise fsys's root is. The applied versions are
// recorded in the table "<set>_schema", so that several migration sets (a
// service's own, and those of the toolkit packages it uses) live side by
// side in one database. On PostgreSQL concurrent callers serialize on an
// advisory lock.
//
// A failing migration is rolled back and reported with its file name; the
// caller should stop.
func Migrate(ctx context.Context, db *DB, set string, fsys fs.FS) (MigrationResult, error) {
	if !namePattern.MatchString(set) {
		return MigrationResult{}, fmt.Errorf("sqldb: migration set name %q must match %s", set, namePattern)
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
		locker, err := lock.NewPostgresSessionLocker()
		if err != nil {
			return MigrationResult{}, fmt.Errorf("sqldb: migrate %s: %w", set, err)
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	}
	p, err := goose.NewProvider(dialect, db.writer, fsys, opts...)
	if err != nil {
		return MigrationResult{}, fmt.Errorf("sqldb: migrate %s: %w", set, oneLine(err))
	}
	results, err := p.Up(ctx)
	var res MigrationResult
	if pe, ok := errors.AsType[*goose.PartialError](err); ok {
		results = pe.Applied
		err = fmt.Errorf("%s: %w", pe.Failed.Source.Path, pe.Err)
	}
	for _, r := range results {
		res.Applied = append(res.Applied, r.Source.Path)
	}
	if err != nil {
		return res, fmt.Errorf("sqldb: migrate %s: %w", set, oneLine(err))
	}
	if res.Version, err = p.GetDBVersion(ctx); err != nil {
		return res, fmt.Errorf("sqldb: migrate %s: read version: %w", set, oneLine(err))
	}
	return res, nil
}
