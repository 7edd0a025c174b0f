// Package survey is the Survey service: the only writer of the survey
// table. Ownership by delegation: when a ticket is completed, the
// completion service sends the survey's data here instead of writing the
// table itself.
//
//	POST /surveys                  {"ticket_id", "customer_id", "expert_id"}: send a survey (once per ticket)
//	GET  /surveys/{id}             one survey
//	GET  /surveys?customer_id=C    a customer's surveys (or ?ticket_id=T)
//	POST /surveys/{id}/response    {"rating": 1-5, "comment": "..."}
//
// Every change publishes an event (sysops.survey.*) and an audit record
// through the service's outbox.
package survey

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/internal/host"
	"github.com/sysops-squad/sysops/internal/httpx"
	"github.com/sysops-squad/sysops/internal/svc"
	"github.com/sysops-squad/sysops/outbox"
	"github.com/sysops-squad/sysops/sqldb"
)

// Name is the service's name.
const Name = "survey"

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations returns the service's schema migrations.
func Migrations() fs.FS { return svc.Migrations(migrations) }

// Spec describes the service to its host.
func Spec() host.Spec {
	return host.Spec{
		TransactionalKeys: true,
		Name:              Name, Migrations: Migrations(), Streams: svc.Streams(Name),
		Start: func(ctx context.Context, deps host.Deps) (http.Handler, error) {
			return New(deps.DB, deps.Logger).Handler(), nil
		},
	}
}

// Survey is one row of the survey table.
type Survey struct {
	ID         string     `json:"id"`
	TicketID   string     `json:"ticket_id"`
	CustomerID string     `json:"customer_id"`
	ExpertID   string     `json:"expert_id"`
	Status     string     `json:"status"`
	Rating     *int       `json:"rating,omitempty"`
	Comment    string     `json:"comment,omitempty"`
	SentAt     time.Time  `json:"sent_at"`
	AnsweredAt *time.Time `json:"answered_at,omitempty"`
}

// Service is the Survey service.
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

// Send records a survey sent for a completed ticket. A ticket gets one
// survey: sending it again returns the first (created reports which).
func (s *Service) Send(ctx context.Context, ticketID, customerID, expertID string) (sv Survey, created bool, err error) {
	var c svc.Check
	c.Required("ticket_id", ticketID, 64)
	c.Required("customer_id", customerID, 64)
	c.Required("expert_id", expertID, 64)
	if err := c.Err(); err != nil {
		return Survey{}, false, err
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	sv = Survey{ID: outbox.NewID(), TicketID: ticketID, CustomerID: customerID, ExpertID: expertID, Status: "sent", SentAt: now}
	err = sqldb.RunInScope(ctx, s.db, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO survey (id, ticket_id, customer_id, expert_id, status, sent_at)
			VALUES ($1, $2, $3, $4, 'sent', $5) ON CONFLICT (ticket_id) DO NOTHING`, sv.ID, ticketID, customerID, expertID, svc.Micros(now))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			sv, err = scan(tx.QueryRowContext(ctx, `SELECT `+columns+` FROM survey WHERE ticket_id = $1`, ticketID))
			return err
		}
		created = true
		if err := svc.Emit(ctx, tx, Name, "sysops.survey.sent.v1", "survey", sv.ID, sv); err != nil {
			return err
		}
		return svc.Audit(ctx, tx, Name, "survey.sent", "survey", sv.ID, map[string]string{"ticket_id": ticketID})
	})
	return sv, created, err
}

const columns = `id, ticket_id, customer_id, expert_id, status, rating, comment, sent_at, answered_at`

func scan(row svc.Scanner) (Survey, error) {
	var s Survey
	var rating, answered sql.NullInt64
	var sent int64
	err := row.Scan(&s.ID, &s.TicketID, &s.CustomerID, &s.ExpertID, &s.Status, &rating, &s.Comment, &sent, &answered)
	s.SentAt = svc.FromMicros(sent)
	if rating.Valid {
		r := int(rating.Int64)
		s.Rating = &r
	}
	if answered.Valid {
		t := svc.FromMicros(answered.Int64)
		s.AnsweredAt = &t
	}
	return s, err
}

// Get returns one survey.
func (s *Service) Get(ctx context.Context, id string) (Survey, error) {
	sv, err := scan(s.db.QueryRowContext(ctx, `SELECT `+columns+` FROM survey WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return sv, sysops.Errorf(sysops.ENotFound, "survey %q not found", id)
	}
	return sv, err
}

// List returns the surveys of a customer or of a ticket, newest first.
func (s *Service) List(ctx context.Context, column, value string) ([]Survey, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+columns+` FROM survey WHERE `+column+` = $1 ORDER BY sent_at DESC, id`, value)
	return svc.Collect(rows, err, scan)
}

// Answer records the customer's response; a survey is answered once.
func (s *Service) Answer(ctx context.Context, id string, rating int, comment string) (Survey, error) {
	var c svc.Check
	c.Range("rating", rating, 1, 5)
	c.Optional("comment", comment, 2000)
	if err := c.Err(); err != nil {
		return Survey{}, err
	}
	var sv Survey
	err := sqldb.RunInScope(ctx, s.db, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE survey SET status = 'answered', rating = $1, comment = $2, answered_at = $3
			WHERE id = $4 AND status = 'sent'`, rating, comment, svc.Micros(time.Now()), id)
		if err != nil {
			return err
		}
		sv, err = scan(tx.QueryRowContext(ctx, `SELECT `+columns+` FROM survey WHERE id = $1`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return sysops.Errorf(sysops.ENotFound, "survey %q not found", id)
		}
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return sysops.Errorf(sysops.EConflict, "survey %q was answered already", id)
		}
		ev := map[string]any{"survey_id": id, "ticket_id": sv.TicketID, "expert_id": sv.ExpertID, "rating": rating}
		if err := svc.Emit(ctx, tx, Name, "sysops.survey.answered.v1", "survey", id, ev); err != nil {
			return err
		}
		return svc.Audit(ctx, tx, Name, "survey.answered", "survey", id, ev)
	})
	return sv, err
}

// Handler returns the service's HTTP API.
func (s *Service) Handler() http.Handler {
	rt := svc.NewRouter(s.logger)
	rt.Handle("POST /surveys", func(w http.ResponseWriter, r *http.Request) error {
		var in struct {
			TicketID   string `json:"ticket_id"`
			CustomerID string `json:"customer_id"`
			ExpertID   string `json:"expert_id"`
		}
		if err := httpx.DecodeJSON(w, r, &in); err != nil {
			return err
		}
		sv, created, err := s.Send(r.Context(), in.TicketID, in.CustomerID, in.ExpertID)
		if err != nil {
			return err
		}
		svc.WriteCreated(w, created, "/surveys/"+sv.ID, sv)
		return nil
	})
	rt.Handle("GET /surveys/{id}", svc.Respond(http.StatusOK, func(r *http.Request) (any, error) {
		return s.Get(r.Context(), r.PathValue("id"))
	}))
	rt.Handle("GET /surveys", func(w http.ResponseWriter, r *http.Request) error {
		q := r.URL.Query()
		var list []Survey
		var err error
		switch {
		case q.Get("customer_id") != "":
			list, err = s.List(r.Context(), "customer_id", q.Get("customer_id"))
		case q.Get("ticket_id") != "":
			list, err = s.List(r.Context(), "ticket_id", q.Get("ticket_id"))
		default:
			return sysops.Errorf(sysops.EInvalid, "query parameter customer_id or ticket_id is required")
		}
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"surveys": list})
		return nil
	}, "customer_id", "ticket_id")
	rt.Handle("POST /surveys/{id}/response", svc.WithBody(http.StatusOK, func(r *http.Request, in struct {
		Rating  int    `json:"rating"`
		Comment string `json:"comment"`
	}) (any, error) {
		return s.Answer(r.Context(), r.PathValue("id"), in.Rating, in.Comment)
	}))
	return rt
}
