package sqldb

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
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
	var c ProvisionConfig
	if len(cfg) > 0 {
		c = cfg[0]
	}
	if !namePattern.MatchString(service) {
		return "", fmt.Errorf("sqldb: service name %q must match %s", service, namePattern)
	}
	if strings.HasPrefix(base, "postgres://") || strings.HasPrefix(base, "postgresql://") {
		return provisionPostgres(ctx, base, cmp.Or(c.Prefix, "sysops_")+service)
	}
	if strings.Contains(base, "://") {
		return "", fmt.Errorf("%w: %q", ErrUnknownScheme, Redact(base))
	}
	dir := strings.TrimPrefix(base, "sqlite:")
	if err := EnsureDir(dir); err != nil {
		return "", err
	}
	return "sqlite:" + filepath.Join(dir, c.Prefix+service+".db"), nil
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

func provisionPostgres(ctx context.Context, base, name string) (string, error) {
	cfg, err := pgx.ParseConfig(base)
	if err != nil {
		return "", fmt.Errorf("sqldb: parse %s: %w", Redact(base), oneLine(err))
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = defaultConnectTimeout
	}
	admin, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return "", fmt.Errorf("sqldb: cannot connect to postgres %s: %w", Redact(base), oneLine(rootCause(err)))
	}
	defer admin.Close(context.WithoutCancel(ctx))

	password := ""
	if cfg.Password != "" {
		mac := hmac.New(sha256.New, []byte(cfg.Password))
		mac.Write([]byte(name))
		password = hex.EncodeToString(mac.Sum(nil))
	}
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
