package sqldb

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// Dialect is the kind of database behind a [DB].
type Dialect string

// The supported dialects. Their string values name the per-dialect
// migration directories (see [Migrate]).
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// idleInTx is the PostgreSQL setting that ends a session idle in a
// transaction for too long.
const idleInTx = "idle_in_transaction_session_timeout"

// defaultConnectTimeout bounds connecting to PostgreSQL and waiting for a busy SQLite file.
const defaultConnectTimeout = 5 * time.Second

// ErrUnknownScheme is returned by [Open] and [Provision] for a URL that is
// neither sqlite:PATH nor postgres://...
var ErrUnknownScheme = errors.New("sqldb: unknown database URL scheme (want sqlite:PATH or postgres://...)")

// DB is an open database. Writes and transactions go to the writer; reads
// made directly on DB go to the read pool. On PostgreSQL both are one pool.
// A DB is safe for concurrent use.
type DB struct {
	dialect Dialect
	url     string
	public  string // url without its password
	writer  *sql.DB
	reader  *sql.DB
}

// Options tunes [Open]. The zero value gives the defaults.
type Options struct {
	// MaxReaders is the size of the SQLite read pool, or of the whole
	// PostgreSQL pool. Default: 4 × GOMAXPROCS, at least 8.
	MaxReaders int
	// BusyTimeout is how long an SQLite writer waits for another process's
	// lock, and the PostgreSQL connect timeout. Default 5 s.
	BusyTimeout time.Duration
}

// Open opens and pings the database at url: "sqlite:PATH" (the file is
// created if missing; its directory must exist) or "postgres://..." /
// "postgresql://..." (any pgx connection string). An unreachable server, a
// missing directory or an unknown scheme is reported in one line naming it.
// On PostgreSQL the server ends a session idle in a transaction for a
// minute (idle_in_transaction_session_timeout, unless the URL sets it), so
// that a process frozen mid-transaction does not hold its locks for as
// long as it lives.
func Open(ctx context.Context, rawURL string, opts ...Options) (*DB, error) {
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	o.MaxReaders = cmp.Or(o.MaxReaders, max(8, 4*runtime.GOMAXPROCS(0)))
	o.BusyTimeout = cmp.Or(o.BusyTimeout, defaultConnectTimeout)

	dialect, err := DialectOf(rawURL)
	if err != nil {
		return nil, err
	}
	var db *DB
	switch dialect {
	case SQLite:
		db, err = openSQLite(rawURL, o)
	case Postgres:
		db, err = openPostgres(rawURL, o)
	}
	if err != nil {
		return nil, err
	}
	pingCtx, cancel := context.WithTimeout(ctx, o.BusyTimeout+time.Second)
	defer cancel()
	if err := db.PingContext(pingCtx); err != nil {
		db.Close()
		if db.dialect == Postgres {
			err = rootCause(err)
		}
		return nil, fmt.Errorf("sqldb: open %s: %w", Redact(rawURL), oneLine(err))
	}
	return db, nil
}

// DialectOf returns the dialect a database URL names.
func DialectOf(rawURL string) (Dialect, error) {
	switch {
	case strings.HasPrefix(rawURL, "sqlite:"):
		return SQLite, nil
	case strings.HasPrefix(rawURL, "postgres://"), strings.HasPrefix(rawURL, "postgresql://"):
		return Postgres, nil
	}
	return "", fmt.Errorf("%w: %q", ErrUnknownScheme, Redact(rawURL))
}

// sqlitePath splits "sqlite:PATH?query" into the path and its query.
func sqlitePath(rawURL string) (string, url.Values, error) {
	rest := strings.TrimPrefix(rawURL, "sqlite:")
	rest = strings.TrimPrefix(rest, "//")
	path, rawQuery, _ := strings.Cut(rest, "?")
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return "", nil, fmt.Errorf("sqldb: %s: bad query: %w", rawURL, err)
	}
	if path == "" || path == ":memory:" {
		return "", nil, fmt.Errorf("sqldb: %q: a file path is required (in-memory databases are not supported)", rawURL)
	}
	return path, q, nil
}

func openSQLite(rawURL string, o Options) (*DB, error) {
	path, q, err := sqlitePath(rawURL)
	if err != nil {
		return nil, err
	}
	sync := "FULL"
	for k, v := range q {
		switch k {
		case "synchronous":
			switch s := strings.ToUpper(v[0]); s {
			case "FULL", "NORMAL", "EXTRA":
				sync = s
			default:
				return nil, fmt.Errorf("sqldb: %s: synchronous=%s is not one of full, normal, extra", rawURL, v[0])
			}
		default:
			return nil, fmt.Errorf("sqldb: %s: unknown option %q (known: synchronous)", rawURL, k)
		}
	}
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("sqldb: database directory %s: %w", dir, errors.Unwrap(err))
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("sqldb: database directory %s is not a directory", dir)
	}
	base := "file:" + path + "?_pragma=busy_timeout(" + fmt.Sprint(o.BusyTimeout.Milliseconds()) + ")" +
		"&_pragma=foreign_keys(1)&_pragma=synchronous(" + sync + ")"
	writer, err := sql.Open("sqlite", base+"&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("sqldb: open %s: %w", rawURL, err)
	}
	writer.SetMaxOpenConns(1)
	writer.SetMaxIdleConns(1)
	writer.SetConnMaxIdleTime(0)
	writer.SetConnMaxLifetime(0)
	// The writer's first connection switches the file to WAL; readers
	// opened before that would see a rollback journal.
	if err := writer.Ping(); err != nil {
		writer.Close()
		return nil, fmt.Errorf("sqldb: open %s: %w", rawURL, oneLine(err))
	}
	reader, err := sql.Open("sqlite", base+"&_pragma=query_only(1)")
	if err != nil {
		writer.Close()
		return nil, fmt.Errorf("sqldb: open %s: %w", rawURL, err)
	}
	reader.SetMaxOpenConns(o.MaxReaders)
	reader.SetMaxIdleConns(o.MaxReaders)
	return &DB{dialect: SQLite, url: rawURL, public: Redact(rawURL), writer: writer, reader: reader}, nil
}

func openPostgres(rawURL string, o Options) (*DB, error) {
	cfg, err := pgx.ParseConfig(rawURL)
	if err != nil {
		return nil, fmt.Errorf("sqldb: parse %s: %w", Redact(rawURL), oneLine(err))
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = o.BusyTimeout
	}
	if _, set := cfg.RuntimeParams[idleInTx]; !set {
		// A process that stops running without dying (frozen, paused)
		// mid-transaction would hold its row and key locks, and stall
		// every other writer of them, for as long as it lives: the server
		// ends such a session after a minute, rolling it back. No
		// transaction of the system stays idle that long; the URL may
		// set another limit (milliseconds, or with a unit).
		cfg.RuntimeParams[idleInTx] = "1min"
	}
	db := openPgxPool(*cfg)
	db.SetMaxOpenConns(o.MaxReaders)
	db.SetMaxIdleConns(o.MaxReaders)
	db.SetConnMaxIdleTime(5 * time.Minute)
	return &DB{dialect: Postgres, url: rawURL, public: Redact(rawURL), writer: db, reader: db}, nil
}

// Dialect reports which kind of database db is.
func (db *DB) Dialect() Dialect { return db.dialect }

// URL returns the URL db was opened with, with any password removed.
func (db *DB) URL() string { return db.public }

// Writer returns the pool that writes go to: one connection on SQLite. Use
// it to hand the database to libraries that need a *sql.DB.
func (db *DB) Writer() *sql.DB { return db.writer }

// Reader returns the pool that reads go to; on PostgreSQL it is the writer.
func (db *DB) Reader() *sql.DB { return db.reader }

// ExecContext runs a statement on the writer, or in the transaction of
// the [Scope] ctx carries for db, once it has begun.
func (db *DB) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if tx := scopeTx(ctx, db); tx != nil {
		return tx.ExecContext(ctx, query, args...)
	}
	return db.writer.ExecContext(ctx, query, args...)
}

// QueryContext runs a query on the read pool, or in the transaction of
// the [Scope] ctx carries for db, once it has begun.
func (db *DB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if tx := scopeTx(ctx, db); tx != nil {
		return tx.QueryContext(ctx, query, args...)
	}
	return db.reader.QueryContext(ctx, query, args...)
}

// QueryRowContext runs a query that returns at most one row on the read
// pool, or in the transaction of the [Scope] ctx carries for db, once it
// has begun.
func (db *DB) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if tx := scopeTx(ctx, db); tx != nil {
		return tx.QueryRowContext(ctx, query, args...)
	}
	return db.reader.QueryRowContext(ctx, query, args...)
}

// BeginTx starts a transaction on the writer. Prefer [RunInTx].
func (db *DB) BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error) {
	return db.writer.BeginTx(ctx, opts)
}

// PingContext checks that the writer and the read pool both answer.
func (db *DB) PingContext(ctx context.Context) error {
	if err := db.writer.PingContext(ctx); err != nil {
		return err
	}
	if db.reader != db.writer {
		return db.reader.PingContext(ctx)
	}
	return nil
}

// Close closes both pools.
func (db *DB) Close() error {
	err := db.writer.Close()
	if db.reader != db.writer {
		err = errors.Join(err, db.reader.Close())
	}
	return err
}

// Redact returns rawURL with its password, if any, replaced by "xxxxx".
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.User == nil {
		return rawURL
	}
	return u.Redacted()
}

// rootCause returns the innermost error of a connection failure ("connection
// refused", "password authentication failed ..."): pgx's own message lists
// every address and attempt over several lines.
func rootCause(err error) error {
	for {
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			inner := u.Unwrap()
			if inner == nil {
				return err
			}
			err = inner
		case interface{ Unwrap() []error }:
			errs := u.Unwrap()
			if len(errs) == 0 {
				return err
			}
			err = errs[len(errs)-1]
		default:
			return err
		}
	}
}

// oneLine flattens a multi-line error (errors.Join) so that a failure is
// reported on one line.
func oneLine(err error) error {
	if err == nil || !strings.Contains(err.Error(), "\n") {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), "\n", "; "))
}
