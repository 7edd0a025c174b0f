package sqldb

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ProvisionConfig tunes [Provision]. The zero value gives the defaults.
type ProvisionConfig struct {
	// Prefix starts every database, role and file name. Default "sysops_"
	// for PostgreSQL and "" for SQLite files.
	Prefix string
}

// Provision returns the URL of service's own database under base, creating
// what is missing. It is idempotent and safe to run from several processes
// at once.
//
// base is either a directory (a plain path or "sqlite:DIR"), where the
// service gets the file DIR/<service>.db, or a PostgreSQL server URL with a
// login that may create roles and databases. There the service gets a
// database "sysops_<service>" owned by a login role of the same name, with
// CONNECT revoked from PUBLIC, so no other service's role can reach it. The
// returned URL logs in as that role. If base carries a password, the role's
// password is derived from it (HMAC-SHA256 over the role name), so every
// process that knows base computes the same one and no secret is written to
// disk; without one, the role gets no password and the server's
// authentication rules (trust, peer, pg_hba.conf) apply.
func Provision(ctx context.Context, base, service string, cfg ...ProvisionConfig) (string, error) {
	where, err := placeOf(base, service, cfg)
	if err != nil {
		return "", err
	}
	if where.postgres {
		return provisionPostgres(ctx, base, where.name)
	}
	if err := EnsureDir(where.dir); err != nil {
		return "", err
	}
	return "sqlite:" + where.file(), nil
}

// place is where a service's database lives under a base: the PostgreSQL
// database and role name, or the SQLite directory and file name.
type place struct {
	postgres bool
	name     string // database and role, or file name without ".db"
	dir      string // SQLite only
}

func (p place) file() string { return filepath.Join(p.dir, p.name+".db") }

// placeOf reads base, service and the optional config of [Provision] and
// [Locate].
func placeOf(base, service string, cfg []ProvisionConfig) (place, error) {
	var c ProvisionConfig
	if len(cfg) > 0 {
		c = cfg[0]
	}
	if !namePattern.MatchString(service) {
		return place{}, fmt.Errorf("sqldb: service name %q must match %s", service, namePattern)
	}
	if strings.HasPrefix(base, "postgres://") || strings.HasPrefix(base, "postgresql://") {
		return place{postgres: true, name: cmp.Or(c.Prefix, "sysops_") + service}, nil
	}
	if strings.Contains(base, "://") {
		return place{}, fmt.Errorf("%w: %q", ErrUnknownScheme, Redact(base))
	}
	return place{name: c.Prefix + service, dir: strings.TrimPrefix(base, "sqlite:")}, nil
}

// EnsureDir creates dir if needed and checks that files can be created in
// it, so that an unusable data directory is reported up front in one line.
func EnsureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("data directory %s: cannot create it: %w", dir, pathCause(err))
	}
	f, err := os.CreateTemp(dir, ".write-check-*")
	if err != nil {
		return fmt.Errorf("data directory %s: not writable: %w", dir, pathCause(err))
	}
	f.Close()
	os.Remove(f.Name())
	return nil
}

func pathCause(err error) error {
	if pe, ok := errors.AsType[*os.PathError](err); ok {
		return pe.Err
	}
	return err
}

// connectError is a failed connection to a PostgreSQL URL: one line naming
// the server, that unwraps to the driver's error (and its SQLSTATE).
type connectError struct {
	url string
	err error
}

func (e *connectError) Error() string {
	return fmt.Sprintf("sqldb: cannot connect to postgres %s: %v", Redact(e.url), oneLine(rootCause(e.err)))
}

func (e *connectError) Unwrap() error { return e.err }

// pgConnect opens one connection to the PostgreSQL URL u, with the default
// connect timeout unless u sets one.
func pgConnect(ctx context.Context, u string) (*pgx.Conn, *pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(u)
	if err != nil {
		return nil, nil, fmt.Errorf("sqldb: parse %s: %w", Redact(u), oneLine(err))
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = defaultConnectTimeout
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, nil, &connectError{url: u, err: err}
	}
	return conn, cfg, nil
}

func provisionPostgres(ctx context.Context, base, name string) (string, error) {
	admin, cfg, err := pgConnect(ctx, base)
	if err != nil {
		return "", err
	}
	defer admin.Close(context.WithoutCancel(ctx))

	password := rolePassword(cfg.Password, name)
	// Role and database DDL from concurrent provisioners collides ("tuple
	// concurrently updated"); one at a time. The lock goes with the session.
	if _, err := admin.Exec(ctx, "SELECT pg_advisory_lock($1)", provisionLockID); err != nil {
		return "", fmt.Errorf("sqldb: provision %s: lock: %w", name, err)
	}
	ident := pgx.Identifier{name}.Sanitize()
	var exists bool
	if err := admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, name).Scan(&exists); err != nil {
		return "", fmt.Errorf("sqldb: provision %s: %w", name, err)
	}
	if !exists {
		if _, err := admin.Exec(ctx, "CREATE ROLE "+ident+" LOGIN"); err != nil && !isPgCode(err, "42710", "23505") {
			return "", fmt.Errorf("sqldb: provision %s: create role: %w", name, err)
		}
	}
	pw := "NULL"
	if password != "" {
		pw = "'" + password + "'" // hex digits only: nothing to escape
	}
	if _, err := admin.Exec(ctx, "ALTER ROLE "+ident+" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD "+pw); err != nil {
		return "", fmt.Errorf("sqldb: provision %s: alter role: %w", name, err)
	}
	if err := admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return "", fmt.Errorf("sqldb: provision %s: %w", name, err)
	}
	if !exists {
		if _, err := admin.Exec(ctx, "CREATE DATABASE "+ident+" OWNER "+ident); err != nil && !isPgCode(err, "42P04", "23505") {
			return "", fmt.Errorf("sqldb: provision %s: create database: %w", name, err)
		}
	}
	if _, err := admin.Exec(ctx, "REVOKE ALL ON DATABASE "+ident+" FROM PUBLIC"); err != nil {
		return "", fmt.Errorf("sqldb: provision %s: revoke: %w", name, err)
	}
	return roleURL(base, name, password)
}

// roleURL is base logging in as the service's role to its database.
func roleURL(base, name, password string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("sqldb: parse %s: %w", Redact(base), err)
	}
	if password != "" {
		u.User = url.UserPassword(name, password)
	} else {
		u.User = url.User(name)
	}
	u.Path = "/" + name
	return u.String(), nil
}

// rolePassword is the password Provision gives the role name under a base
// whose login has password basePassword: none if it has none.
func rolePassword(basePassword, name string) string {
	if basePassword == "" {
		return ""
	}
	mac := hmac.New(sha256.New, []byte(basePassword))
	mac.Write([]byte(name))
	return hex.EncodeToString(mac.Sum(nil))
}

// ErrNoDatabase: the service has no database under the base. See
// [Locate].
var ErrNoDatabase = errors.New("sqldb: no database")

// Locate returns the URL of the database [Provision] made for service
// under base, creating nothing. Where there is none — no file in the
// directory, no such database or role on the server — the error wraps
// [ErrNoDatabase] and names where it looked: most often a data directory
// or server other than the one the system runs with.
func Locate(ctx context.Context, base, service string, cfg ...ProvisionConfig) (string, error) {
	where, err := placeOf(base, service, cfg)
	if err != nil {
		return "", err
	}
	if !where.postgres {
		file := where.file()
		if _, err := os.Stat(file); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return "", fmt.Errorf("%w: %s has no %s for service %s", ErrNoDatabase, where.dir, filepath.Base(file), service)
			}
			return "", fmt.Errorf("sqldb: %s: %w", file, pathCause(err))
		}
		return "sqlite:" + file, nil
	}
	admin, err := pgx.ParseConfig(base)
	if err != nil {
		return "", fmt.Errorf("sqldb: parse %s: %w", Redact(base), oneLine(err))
	}
	u, err := roleURL(base, where.name, rolePassword(admin.Password, where.name))
	if err != nil {
		return "", err
	}
	conn, _, err := pgConnect(ctx, u)
	if err != nil {
		// 3D000: no such database; 28000: no such role (or one that may
		// not log in).
		if isPgCode(err, "3D000", "28000") {
			return "", fmt.Errorf("%w: %s has no database %s for service %s", ErrNoDatabase, Redact(base), where.name, service)
		}
		return "", err
	}
	conn.Close(context.WithoutCancel(ctx))
	return u, nil
}

// provisionLockID is the advisory lock that serializes [Provision] calls.
const provisionLockID = 0x5e5_0b5

func isPgCode(err error, codes ...string) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	for _, c := range codes {
		if pgErr.Code == c {
			return true
		}
	}
	return false
}

// Deprovision removes what [Provision] made for service from base: its
// SQLite file (and WAL files), or its PostgreSQL database and login role.
// Missing ones are not an error. For throwaway databases (benchmarks).
func Deprovision(ctx context.Context, base, service string, cfg ...ProvisionConfig) error {
	var c ProvisionConfig
	if len(cfg) > 0 {
		c = cfg[0]
	}
	if !namePattern.MatchString(service) {
		return fmt.Errorf("sqldb: service name %q must match %s", service, namePattern)
	}
	if !strings.HasPrefix(base, "postgres://") && !strings.HasPrefix(base, "postgresql://") {
		if strings.Contains(base, "://") {
			return fmt.Errorf("%w: %q", ErrUnknownScheme, Redact(base))
		}
		file := filepath.Join(strings.TrimPrefix(base, "sqlite:"), c.Prefix+service+".db")
		for _, f := range []string{file, file + "-wal", file + "-shm"} {
			if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("sqldb: deprovision %s: %w", service, err)
			}
		}
		return nil
	}
	name := cmp.Or(c.Prefix, "sysops_") + service
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		return fmt.Errorf("sqldb: cannot connect to postgres %s: %w", Redact(base), oneLine(rootCause(err)))
	}
	defer admin.Close(context.WithoutCancel(ctx))
	if _, err := admin.Exec(ctx, "SELECT pg_advisory_lock($1)", provisionLockID); err != nil {
		return fmt.Errorf("sqldb: deprovision %s: lock: %w", name, err)
	}
	ident := pgx.Identifier{name}.Sanitize()
	for _, q := range []string{"DROP DATABASE IF EXISTS " + ident + " WITH (FORCE)", "DROP ROLE IF EXISTS " + ident} {
		if _, err := admin.Exec(ctx, q); err != nil {
			return fmt.Errorf("sqldb: deprovision %s: %w", name, err)
		}
	}
	return nil
}
