// Package ticket is the Ticket service: the owner of the ticket table
// (customer, description, priority, skill needed, zip, status). It is the
// table's only writer; the assignment of a ticket to an expert lives in
// the assignment service's ticket_assignment table, linked by ticket id
// (the old shared ticket table, split by ownership). It validates zip
// codes against its own replicated copy of location's zip codes, so it
// keeps taking tickets while location is down.
//
//	POST /tickets                   open a ticket
//	GET  /tickets/{id}              one ticket
//	GET  /tickets?customer_id=C&status=S&limit=N
//	POST /tickets/{id}/status       {"status": "assigned" | "completed" | "cancelled" | "open"}
//	POST /tickets/{id}/cancel       cancel (or tombstone an id not created yet)
//
// Every change publishes an event (sysops.ticket.*) and an audit record
// through the service's outbox.
package ticket

import (
	"cmp"
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"slices"
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
const Name = "ticket"

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations returns the service's schema migrations.
func Migrations() fs.FS { return svc.Migrations(migrations) }

// Config configures the service.
type Config struct {
	// ZipRefresh is how often the zip code copy is checked against
	// location. Default 5 minutes.
	ZipRefresh time.Duration
}

// Spec describes the service to its host.
func Spec() host.Spec { return SpecWith(Config{}) }

// SpecWith describes the service configured by cfg.
func SpecWith(cfg Config) host.Spec {
	if cfg.ZipRefresh <= 0 {
		cfg.ZipRefresh = 5 * time.Minute
	}
	return host.Spec{
		TransactionalKeys: true,
		Name:              Name, Migrations: Migrations(), Streams: svc.Streams(Name),
		Start: func(ctx context.Context, deps host.Deps) (http.Handler, error) {
			zips, err := svc.StartZipReplica(ctx, deps.DB, deps.Peers, deps.Logger, cfg.ZipRefresh)
			if err != nil {
				return nil, err
			}
			return New(deps.DB, zips, deps.Logger).Handler(), nil
		},
	}
}

// Ticket is one row of the ticket table.
type Ticket struct {
	ID          string    `json:"id"`
	CustomerID  string    `json:"customer_id"`
	Description string    `json:"description"`
	Priority    string    `json:"priority"`
	Skill       string    `json:"skill"`
	Zip         string    `json:"zip"`
	Status      string    `json:"status"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// NewTicket is the body of a new ticket.
type NewTicket struct {
	// ID is optional: a caller that must be able to cancel the ticket
	// before it knows the outcome of creating it (a saga) chooses it.
	ID          string `json:"id,omitempty"`
	CustomerID  string `json:"customer_id"`
	Description string `json:"description"`
	Priority    string `json:"priority"`
	Skill       string `json:"skill"`
	Zip         string `json:"zip"`
}

// transitions lists the statuses a ticket may move to from each status.
var transitions = map[string][]string{
	"open":     {"assigned", "cancelled"},
	"assigned": {"completed", "cancelled", "open"},
}

// sourcesOf returns the statuses a ticket can become status from.
func sourcesOf(status string) []string {
	var out []string
	for from, to := range transitions {
		if slices.Contains(to, status) {
			out = append(out, from)
		}
	}
	return out
}

// Service is the Ticket service.
type Service struct {
	db     *sqldb.DB
	zips   *svc.ZipReplica
	logger *slog.Logger
}

// New returns the service over its database and zip code copy.
func New(db *sqldb.DB, zips *svc.ZipReplica, logger *slog.Logger) *Service {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Service{db: db, zips: zips, logger: logger}
}

// Open creates a ticket in status open. With a chosen id, opening it again
// returns it (created is false), and opening an id that was cancelled
// before it was created is a conflict.
func (s *Service) Open(ctx context.Context, in NewTicket) (t Ticket, created bool, err error) {
	var c svc.Check
	c.Optional("id", in.ID, 64)
	c.Required("customer_id", in.CustomerID, 64)
	c.Required("description", in.Description, 4000)
	c.OneOf("priority", in.Priority, svc.Priorities...)
	c.OneOf("skill", in.Skill, svc.Skills...)
	c.Zip("zip", in.Zip)
	if err := c.Err(); err != nil {
		return Ticket{}, false, err
	}
	if _, err := s.zips.Lookup(ctx, in.Zip); err != nil {
		if sysops.CodeOf(err) == sysops.EInvalid {
			return Ticket{}, false, sysops.Errorf(sysops.EInvalid, "field \"zip\": %s", sysops.MessageOf(err))
		}
		return Ticket{}, false, err
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	tk := Ticket{ID: cmp.Or(in.ID, outbox.NewID()), CustomerID: in.CustomerID, Description: strings.TrimSpace(in.Description),
		Priority: in.Priority, Skill: in.Skill, Zip: in.Zip, Status: "open", CreatedAt: now, UpdatedAt: now}
	err = sqldb.RunInScope(ctx, s.db, func(tx *sql.Tx) error {
		created = false
		if err := sqldb.LockKey(ctx, tx, "ticket/"+tk.ID); err != nil {
			return err
		}
		// Insert unless it exists or was cancelled before it was created:
		// one statement in the common case; the reads below only when it
		// inserted nothing.
		res, err := tx.ExecContext(ctx, `INSERT INTO ticket (id, customer_id, description, priority, skill, zip, status, created_at, updated_at)
			SELECT $1, $2, $3, $4, $5, $6, 'open', $7, $7 WHERE NOT EXISTS (SELECT 1 FROM ticket_tombstone WHERE id = $1)
			ON CONFLICT (id) DO NOTHING`, tk.ID, tk.CustomerID, tk.Description, tk.Priority, tk.Skill, tk.Zip, svc.Micros(now))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			existing, err := scan(tx.QueryRowContext(ctx, `SELECT `+columns+` FROM ticket WHERE id = $1`, tk.ID))
			switch {
			case errors.Is(err, sql.ErrNoRows):
				return sysops.Errorf(sysops.EConflict, "ticket %q was cancelled before it was created", tk.ID)
			case err != nil:
				return err
			case existing.CustomerID != tk.CustomerID:
				return sysops.Errorf(sysops.EConflict, "ticket %q exists for another customer", tk.ID)
			}
			tk = existing
			return nil
		}
		created = true
		if err := svc.Emit(ctx, tx, Name, "sysops.ticket.opened.v1", "ticket", tk.ID, tk); err != nil {
			return err
		}
		return svc.Audit(ctx, tx, Name, "ticket.opened", "ticket", tk.ID, map[string]string{"customer_id": tk.CustomerID, "priority": tk.Priority})
	})
	return tk, created, err
}

// Cancel cancels a ticket, open or assigned; cancelling a cancelled one
// changes nothing. A ticket that does not exist yet is tombstoned, so that
// creating it later is refused: a saga's compensation may overtake its
// action.
func (s *Service) Cancel(ctx context.Context, id string) (Ticket, error) {
	var t Ticket
	err := sqldb.RunInScope(ctx, s.db, func(tx *sql.Tx) error {
		if err := sqldb.LockKey(ctx, tx, "ticket/"+id); err != nil {
			return err
		}
		var err error
		t, err = scan(tx.QueryRowContext(ctx, `SELECT `+columns+` FROM ticket WHERE id = $1`, id))
		if errors.Is(err, sql.ErrNoRows) {
			t = Ticket{ID: id, Status: "cancelled"}
			return svc.Tombstone(ctx, tx, "ticket_tombstone", id)
		}
		if err != nil {
			return err
		}
		return change(ctx, tx, &t, "cancelled", time.Now().UTC().Truncate(time.Microsecond))
	})
	return t, err
}

const columns = `id, customer_id, description, priority, skill, zip, status, created_at, updated_at`

func scan(row svc.Scanner) (Ticket, error) {
	var t Ticket
	var created, updated int64
	err := row.Scan(&t.ID, &t.CustomerID, &t.Description, &t.Priority, &t.Skill, &t.Zip, &t.Status, &created, &updated)
	t.CreatedAt, t.UpdatedAt = svc.FromMicros(created), svc.FromMicros(updated)
	return t, err
}

// Get returns one ticket.
func (s *Service) Get(ctx context.Context, id string) (Ticket, error) {
	t, err := scan(s.db.QueryRowContext(ctx, `SELECT `+columns+` FROM ticket WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return t, sysops.Errorf(sysops.ENotFound, "ticket %q not found", id)
	}
	return t, err
}

// List returns tickets, newest first, optionally of one customer and in
// one status.
func (s *Service) List(ctx context.Context, customerID, status string, limit int) ([]Ticket, error) {
	q := `SELECT ` + columns + ` FROM ticket WHERE 1 = 1`
	args := []any{limit}
	if customerID != "" {
		args = append(args, customerID)
		q += fmt.Sprintf(` AND customer_id = $%d`, len(args))
	}
	if status != "" {
		args = append(args, status)
		q += fmt.Sprintf(` AND status = $%d`, len(args))
	}
	rows, err := s.db.QueryContext(ctx, q+` ORDER BY created_at DESC, id LIMIT $1`, args...)
	return svc.Collect(rows, err, scan)
}

// SetStatus moves a ticket to status. Moving it to the status it has is a
// no-op (a repeat is safe); a move the lifecycle does not allow is a
// conflict.
func (s *Service) SetStatus(ctx context.Context, id, status string) (Ticket, error) {
	var c svc.Check
	c.OneOf("status", status, "open", "assigned", "completed", "cancelled")
	if err := c.Err(); err != nil {
		return Ticket{}, err
	}
	var t Ticket
	err := sqldb.RunInScope(ctx, s.db, func(tx *sql.Tx) error {
		now := time.Now().UTC().Truncate(time.Microsecond)
		if from := sourcesOf(status); len(from) == 1 {
			// One status leads here: try the change in one statement.
			var err error
			t, err = scan(tx.QueryRowContext(ctx, `UPDATE ticket SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4
				RETURNING `+columns, status, svc.Micros(now), id, from[0]))
			if err == nil {
				return changed(ctx, tx, t, from[0])
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			// Not found, already there, or not allowed: read it to say which.
		}
		var err error
		t, err = scan(tx.QueryRowContext(ctx, `SELECT `+columns+` FROM ticket WHERE id = $1`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return sysops.Errorf(sysops.ENotFound, "ticket %q not found", id)
		}
		if err != nil {
			return err
		}
		return change(ctx, tx, &t, status, now)
	})
	return t, err
}

// change moves ticket t, as just read, to status (nothing if it is there
// already) and records the change, refusing a transition the ticket's
// life does not allow.
func change(ctx context.Context, tx *sql.Tx, t *Ticket, status string, now time.Time) error {
	if t.Status == status {
		return nil
	}
	if !slices.Contains(transitions[t.Status], status) {
		return sysops.Errorf(sysops.EConflict, "ticket %q is %s and cannot become %s", t.ID, t.Status, status)
	}
	res, err := tx.ExecContext(ctx, `UPDATE ticket SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4`,
		status, svc.Micros(now), t.ID, t.Status)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return sysops.Errorf(sysops.EConflict, "ticket %q changed concurrently; retry", t.ID)
	}
	from := t.Status
	t.Status, t.UpdatedAt = status, now
	return changed(ctx, tx, *t, from)
}

// changed records that ticket t (as it is now) left status from: its
// event and its audit record.
func changed(ctx context.Context, tx *sql.Tx, t Ticket, from string) error {
	ev := map[string]string{"ticket_id": t.ID, "customer_id": t.CustomerID, "from": from, "to": t.Status}
	if err := svc.Emit(ctx, tx, Name, "sysops.ticket."+t.Status+".v1", "ticket", t.ID, ev); err != nil {
		return err
	}
	return svc.Audit(ctx, tx, Name, "ticket."+t.Status, "ticket", t.ID, ev)
}

// Handler returns the service's HTTP API.
func (s *Service) Handler() http.Handler {
	rt := svc.NewRouter(s.logger)
	rt.Handle("POST /tickets", func(w http.ResponseWriter, r *http.Request) error {
		var in NewTicket
		if err := httpx.DecodeJSON(w, r, &in); err != nil {
			return err
		}
		t, created, err := s.Open(r.Context(), in)
		if err != nil {
			return err
		}
		svc.WriteCreated(w, created, "/tickets/"+t.ID, t)
		return nil
	})
	rt.Handle("POST /tickets/{id}/cancel", svc.Respond(http.StatusOK, func(r *http.Request) (any, error) {
		return s.Cancel(r.Context(), r.PathValue("id"))
	}))
	rt.Handle("GET /tickets/{id}", svc.Respond(http.StatusOK, func(r *http.Request) (any, error) {
		return s.Get(r.Context(), r.PathValue("id"))
	}))
	rt.Handle("GET /tickets", func(w http.ResponseWriter, r *http.Request) error {
		if err := svc.KnownParams(r, "customer_id", "status", "limit"); err != nil {
			return err
		}
		limit, err := svc.Limit(r, 100, 1000)
		if err != nil {
			return err
		}
		status := r.URL.Query().Get("status")
		if status != "" {
			var c svc.Check
			c.OneOf("status", status, "open", "assigned", "completed", "cancelled")
			if err := c.Err(); err != nil {
				return err
			}
		}
		ts, err := s.List(r.Context(), r.URL.Query().Get("customer_id"), status, limit)
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"tickets": ts})
		return nil
	})
	rt.Handle("POST /tickets/{id}/status", svc.WithBody(http.StatusOK, func(r *http.Request, in struct {
		Status string `json:"status"`
	}) (any, error) {
		return s.SetStatus(r.Context(), r.PathValue("id"), in.Status)
	}))
	return rt
}
