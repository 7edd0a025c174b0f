// Package customer is the Customer service: the owner of the customer
// table (profile: name, e-mail, zip, and the count of open tickets). It
// is the table's only writer; others read customers through its API:
//
//	POST /customers                     register a profile
//	GET  /customers/{id}                one customer
//	GET  /customers?email=E&limit=N     customers, newest first
//	POST /customers/{id}/open-tickets   {"delta": 1 or -1}
//
// Every change publishes an event (sysops.customer.*) and an audit record
// through the service's outbox.
package customer

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/internal/host"
	"github.com/sysops-squad/sysops/internal/httpx"
	"github.com/sysops-squad/sysops/internal/svc"
	"github.com/sysops-squad/sysops/outbox"
	"github.com/sysops-squad/sysops/sqldb"
)

// Name is the service's name.
const Name = "customer"

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations returns the service's schema migrations.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the embedded directory is part of the binary
	}
	return sub
}

// Spec describes the service to its host.
func Spec() host.Spec {
	return host.Spec{
		Name: Name, Migrations: Migrations(), Streams: svc.Streams(Name),
		Start: func(ctx context.Context, deps host.Deps) (http.Handler, error) {
			return New(deps.DB, deps.Logger).Handler(), nil
		},
	}
}

// Customer is one row of the customer table.
type Customer struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Email       string    `json:"email"`
	Zip         string    `json:"zip"`
	OpenTickets int       `json:"open_tickets"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Service is the Customer service.
type Service struct {
	db     *sqldb.DB
	logger *slog.Logger
}

// New returns the service over its database.
func New(db *sqldb.DB, logger *slog.Logger) *Service {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Service{db: db, logger: logger}
}

// NewCustomer is the body of a registration.
type NewCustomer struct {
	Name  string `json:"name"`
	Email string `json:"email"`
	Zip   string `json:"zip"`
}

// Register creates a customer.
func (s *Service) Register(ctx context.Context, in NewCustomer) (Customer, error) {
	in.Email = strings.ToLower(strings.TrimSpace(in.Email))
	var c svc.Check
	c.Required("name", in.Name, 200)
	c.Email("email", in.Email)
	c.Zip("zip", in.Zip)
	if err := c.Err(); err != nil {
		return Customer{}, err
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	cu := Customer{ID: outbox.NewID(), Name: strings.TrimSpace(in.Name), Email: in.Email, Zip: in.Zip, CreatedAt: now, UpdatedAt: now}
	err := sqldb.RunInTx(ctx, s.db, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO customer (id, name, email, zip, open_tickets, created_at, updated_at)
			VALUES ($1, $2, $3, $4, 0, $5, $5)`, cu.ID, cu.Name, cu.Email, cu.Zip, svc.Micros(now)); err != nil {
			if sqldb.IsUniqueViolation(err) {
				return sysops.Errorf(sysops.EConflict, "a customer with email %q is already registered", cu.Email)
			}
			return err
		}
		if err := svc.Emit(ctx, tx, Name, "sysops.customer.registered.v1", "customer", cu.ID, cu); err != nil {
			return err
		}
		return svc.Audit(ctx, tx, Name, "customer.registered", "customer", cu.ID, map[string]string{"email": cu.Email})
	})
	return cu, err
}

const columns = `id, name, email, zip, open_tickets, created_at, updated_at`

func scan(row interface{ Scan(...any) error }) (Customer, error) {
	var c Customer
	var created, updated int64
	err := row.Scan(&c.ID, &c.Name, &c.Email, &c.Zip, &c.OpenTickets, &created, &updated)
	c.CreatedAt, c.UpdatedAt = svc.FromMicros(created), svc.FromMicros(updated)
	return c, err
}

// Get returns one customer.
func (s *Service) Get(ctx context.Context, id string) (Customer, error) {
	c, err := scan(s.db.QueryRowContext(ctx, `SELECT `+columns+` FROM customer WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return c, sysops.Errorf(sysops.ENotFound, "customer %q not found", id)
	}
	return c, err
}

// List returns customers, newest first; email filters to one address.
func (s *Service) List(ctx context.Context, email string, limit int) ([]Customer, error) {
	q := `SELECT ` + columns + ` FROM customer`
	args := []any{limit}
	if email != "" {
		q += ` WHERE email = $2`
		args = append(args, strings.ToLower(email))
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY created_at DESC, id LIMIT $1`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Customer{}
	for rows.Next() {
		c, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// AdjustOpenTickets adds delta (1 or -1) to a customer's open_tickets; it
// never goes below zero.
func (s *Service) AdjustOpenTickets(ctx context.Context, id string, delta int) (Customer, error) {
	if delta != 1 && delta != -1 {
		return Customer{}, sysops.Errorf(sysops.EInvalid, "field \"delta\" must be 1 or -1, not %d", delta)
	}
	var cu Customer
	err := sqldb.RunInTx(ctx, s.db, func(tx *sql.Tx) error {
		now := time.Now().UTC()
		res, err := tx.ExecContext(ctx, `UPDATE customer SET open_tickets = open_tickets + $1, updated_at = $2
			WHERE id = $3 AND open_tickets + $1 >= 0`, delta, svc.Micros(now), id)
		if err != nil {
			return err
		}
		cu, err = scan(tx.QueryRowContext(ctx, `SELECT `+columns+` FROM customer WHERE id = $1`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return sysops.Errorf(sysops.ENotFound, "customer %q not found", id)
		}
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return sysops.Errorf(sysops.EConflict, "customer %q has no open tickets to decrement", id)
		}
		ev := map[string]any{"customer_id": id, "delta": delta, "open_tickets": cu.OpenTickets}
		if err := svc.Emit(ctx, tx, Name, "sysops.customer.open_tickets_changed.v1", "customer", id, ev); err != nil {
			return err
		}
		return svc.Audit(ctx, tx, Name, "customer.open_tickets_changed", "customer", id, ev)
	})
	return cu, err
}

// Handler returns the service's HTTP API.
func (s *Service) Handler() http.Handler {
	rt := svc.NewRouter(s.logger)
	rt.Handle("POST /customers", func(w http.ResponseWriter, r *http.Request) error {
		var in NewCustomer
		if err := httpx.DecodeJSON(w, r, &in); err != nil {
			return err
		}
		c, err := s.Register(r.Context(), in)
		if err != nil {
			return err
		}
		w.Header().Set("Location", "/customers/"+c.ID)
		httpx.WriteJSON(w, http.StatusCreated, c)
		return nil
	})
	rt.Handle("GET /customers/{id}", func(w http.ResponseWriter, r *http.Request) error {
		c, err := s.Get(r.Context(), r.PathValue("id"))
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, c)
		return nil
	})
	rt.Handle("GET /customers", func(w http.ResponseWriter, r *http.Request) error {
		if err := svc.KnownParams(r, "email", "limit"); err != nil {
			return err
		}
		limit, err := svc.Limit(r, 100, 1000)
		if err != nil {
			return err
		}
		cs, err := s.List(r.Context(), r.URL.Query().Get("email"), limit)
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"customers": cs})
		return nil
	})
	rt.Handle("POST /customers/{id}/open-tickets", func(w http.ResponseWriter, r *http.Request) error {
		var in struct {
			Delta int `json:"delta"`
		}
		if err := httpx.DecodeJSON(w, r, &in); err != nil {
			return err
		}
		c, err := s.AdjustOpenTickets(r.Context(), r.PathValue("id"), in.Delta)
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, c)
		return nil
	})
	return rt
}
