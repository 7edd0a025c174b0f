package svc

import (
	"context"
	"database/sql"
	"embed"
	"io/fs"
	"net/http"
	"time"

	"github.com/sysops-squad/sysops/internal/httpx"
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
