package svc

import (
	"context"
	"database/sql"
	"embed"
	"io/fs"
	"net/http"
	"time"

	"github.com/sysops-squad/sysops/internal/httpx"
	"github.com/sysops-squad/sysops/sqldb"
)

// Migrations returns the "migrations" directory of a service's embedded
// files, for [sqldb.Migrate].
func Migrations(files embed.FS) fs.FS {
	sub, err := fs.Sub(files, "migrations")
	if err != nil {
		panic(err) // the embedded directory is part of the binary
	}
	return sub
}

// Respond adapts fn to a handler that answers status with fn's result as
// JSON.
func Respond[T any](status int, fn func(r *http.Request) (T, error)) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		v, err := fn(r)
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, status, v)
		return nil
	}
}

// WithBody is [Respond] for a request whose JSON body is decoded (strictly,
// see [httpx.DecodeJSON]) into In first.
func WithBody[In, T any](status int, fn func(r *http.Request, in In) (T, error)) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var in In
		if err := httpx.DecodeJSON(w, r, &in); err != nil {
			return err
		}
		v, err := fn(r, in)
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, status, v)
		return nil
	}
}

// WriteCreated answers 201 with a Location when created is true, else 200:
// the answer to a create that may be a repeat.
func WriteCreated(w http.ResponseWriter, created bool, location string, v any) {
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	w.Header().Set("Location", location)
	httpx.WriteJSON(w, status, v)
}

// Scanner is a row to scan: *sql.Row or *sql.Rows.
type Scanner interface{ Scan(...any) error }

// Collect scans every row of a query with scan; an empty result is an
// empty, non-nil slice.
func Collect[T any](rows *sql.Rows, err error, scan func(Scanner) (T, error)) ([]T, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// Returned collects the values of a one-column query (the ids a
// statement's RETURNING gave back, say) as a set.
func Returned(rows *sql.Rows, err error) (map[string]bool, error) {
	got, err := Collect(rows, err, func(r Scanner) (string, error) {
		var v string
		return v, r.Scan(&v)
	})
	set := make(map[string]bool, len(got))
	for _, v := range got {
		set[v] = true
	}
	return set, err
}

// Tombstone tables have the columns id and created_at.

// Tombstoned reports whether id is in the tombstone table: an entity whose
// compensation arrived before its creation, which must then be refused.
// Call it under [sqldb.LockKey] for the id.
func Tombstoned(ctx context.Context, tx *sql.Tx, table, id string) (bool, error) {
	var n int
	err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+table+` WHERE id = $1`, id).Scan(&n)
	return n > 0, err
}

// Tombstone records id in the tombstone table (again is a no-op).
func Tombstone(ctx context.Context, tx *sql.Tx, table, id string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO `+table+` (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING`, id, Micros(time.Now()))
	return err
}

// TombstoneAbsent reads which of ids are in column of table, records the
// others in the tombstone table (a compensation that came before the
// action that would have created them), one statement each, and returns
// the ids present. Call it under the ids' keys' locks.
func TombstoneAbsent(ctx context.Context, tx *sql.Tx, table, column string, ids []string, tombstones string) (map[string]bool, error) {
	list, args := sqldb.Rows(0, "?", len(ids), func(i int) []any { return []any{ids[i]} })
	present, err := Returned(tx.QueryContext(ctx, `SELECT `+column+` FROM `+table+` WHERE `+column+` IN (`+list+`)`, args...))
	if err != nil {
		return nil, err
	}
	var absent []string
	for _, id := range ids {
		if !present[id] {
			absent = append(absent, id)
		}
	}
	return present, Tombstones(ctx, tx, tombstones, absent)
}

// Tombstones records ids in the tombstone table in one statement (again is
// a no-op); nothing for no ids.
func Tombstones(ctx context.Context, tx *sql.Tx, table string, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	values, args := sqldb.Rows(1, "(?, CAST($1 AS BIGINT))", len(ids), func(i int) []any { return []any{ids[i]} })
	_, err := tx.ExecContext(ctx, `INSERT INTO `+table+` (id, created_at) VALUES `+values+` ON CONFLICT (id) DO NOTHING`,
		append([]any{Micros(time.Now())}, args...)...)
	return err
}
