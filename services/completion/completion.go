// Package completion is the Ticket Completion service: it completes a
// ticket, and owns the completion table recording each completion. It
// writes nothing of the others': it closes the ticket through ticket's
// API, records the completion notes through assignment's, decrements the
// customer's open tickets through customer's, and — ownership by
// delegation — sends the survey's data to survey's API, which alone
// writes the survey table.
//
//	POST /completions               {"ticket_id", "notes"}: complete a ticket
//	GET  /completions/{ticket_id}   one completion
//	POST /completions/{ticket_id}/record   record a completion an orchestrated saga drove
//	                                {"customer_id", "expert_id", "notes", "survey_id"}
//
// The steps are plain calls in sequence. Each carries an Idempotency-Key
// derived from the ticket and the notes, so completing a ticket again with
// the same notes (after a failure part way, say) repeats no step that was
// applied; a completion with other notes, racing or late, is refused by
// the ticket, the first step, before anything changed.
package completion

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/hex"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/internal/host"
	"github.com/sysops-squad/sysops/internal/httpx"
	"github.com/sysops-squad/sysops/internal/svc"
	"github.com/sysops-squad/sysops/sqldb"
)

// Name is the service's name.
const Name = "completion"

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations returns the service's schema migrations.
func Migrations() fs.FS { return svc.Migrations(migrations) }

// Spec describes the service to its host.
func Spec() host.Spec {
	return host.Spec{
		Name: Name, Migrations: Migrations(), Streams: svc.Streams(Name),
		Start: func(ctx context.Context, deps host.Deps) (http.Handler, error) {
			return New(deps.DB, deps.Peers, deps.Logger).Handler(), nil
		},
	}
}

// Completion is one row of the completion table.
type Completion struct {
	TicketID    string    `json:"ticket_id"`
	CustomerID  string    `json:"customer_id"`
	ExpertID    string    `json:"expert_id"`
	Notes       string    `json:"notes"`
	SurveyID    string    `json:"survey_id"`
	CompletedAt time.Time `json:"completed_at"`
}

// Service is the Ticket Completion service.
type Service struct {
	db                                 *sqldb.DB
	ticket, assignment, customer, surv *svc.Client
	logger                             *slog.Logger
}

// New returns the service over its database, calling its peers.
func New(db *sqldb.DB, peers svc.Peers, logger *slog.Logger) *Service {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Service{db: db, logger: logger,
		ticket: svc.NewClient(peers, "ticket"), assignment: svc.NewClient(peers, "assignment"),
		customer: svc.NewClient(peers, "customer"), surv: svc.NewClient(peers, "survey")}
}

// Complete completes an assigned ticket. Completing it again with the
// same notes returns its completion (created false); with other notes —
// another request — is a conflict, as is completing a ticket that is not
// assigned.
func (s *Service) Complete(ctx context.Context, ticketID, notes string) (Completion, bool, error) {
	var c svc.Check
	c.Required("ticket_id", ticketID, 64)
	c.Required("notes", notes, 4000)
	if err := c.Err(); err != nil {
		return Completion{}, false, err
	}
	if done, err := s.Get(ctx, ticketID); err == nil {
		if done.Notes != notes {
			return Completion{}, false, sysops.Errorf(sysops.EConflict, "ticket %q is already completed", ticketID)
		}
		return done, false, nil
	} else if sysops.CodeOf(err) != sysops.ENotFound {
		return Completion{}, false, err
	}
	// The keys of the calls below derive from the ticket and the notes: a
	// completion that failed part way, asked again, repeats none of the
	// calls that were applied and makes the rest; another completion of
	// the ticket, with other notes, is refused by the ticket's first move.
	sum := sha256.Sum256([]byte(notes))
	ctx = svc.WithIdempotencyKey(ctx, "completion/"+ticketID+"/"+hex.EncodeToString(sum[:8]))
	id := url.PathEscape(ticketID)
	var tk struct {
		CustomerID string `json:"customer_id"`
		Status     string `json:"status"`
	}
	if err := s.ticket.Get(ctx, "/tickets/"+id, &tk); err != nil {
		return Completion{}, false, err
	}
	if tk.Status != "assigned" && tk.Status != "completed" {
		return Completion{}, false, sysops.Errorf(sysops.EConflict, "ticket %q is %s; only an assigned ticket can be completed", ticketID, tk.Status)
	}
	// The ticket moves first, as in the complete-ticket saga: of requests
	// racing to complete or cancel it, the one it refuses has changed
	// nothing.
	if err := s.ticket.Post(ctx, "/tickets/"+id+"/status", map[string]string{"status": "completed"}, nil); err != nil {
		return Completion{}, false, err
	}
	var as struct {
		ExpertID string `json:"expert_id"`
	}
	if err := s.assignment.Post(ctx, "/assignments/"+id+"/complete", map[string]string{"notes": notes}, &as); err != nil {
		return Completion{}, false, err
	}
	if err := s.customer.Post(ctx, "/customers/"+url.PathEscape(tk.CustomerID)+"/open-tickets", map[string]int{"delta": -1}, nil); err != nil {
		return Completion{}, false, err
	}
	var sv struct {
		ID string `json:"id"`
	}
	if err := s.surv.Post(ctx, "/surveys", map[string]string{"ticket_id": ticketID, "customer_id": tk.CustomerID,
		"expert_id": as.ExpertID}, &sv); err != nil {
		return Completion{}, false, err
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	done := Completion{TicketID: ticketID, CustomerID: tk.CustomerID, ExpertID: as.ExpertID, Notes: notes, SurveyID: sv.ID, CompletedAt: now}
	err := sqldb.RunInTx(ctx, s.db, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO completion (ticket_id, customer_id, expert_id, notes, survey_id, completed_at)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (ticket_id) DO NOTHING`, done.TicketID, done.CustomerID, done.ExpertID,
			done.Notes, done.SurveyID, svc.Micros(now))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil // a concurrent completion recorded it
		}
		if err := svc.Emit(ctx, tx, Name, "sysops.completion.completed.v1", "completion", ticketID, done); err != nil {
			return err
		}
		return svc.Audit(ctx, tx, Name, "ticket.completed", "ticket", ticketID, map[string]string{"expert_id": done.ExpertID, "survey_id": done.SurveyID})
	})
	if err != nil {
		return Completion{}, false, err
	}
	got, err := s.Get(ctx, ticketID)
	return got, true, err
}

// Record stores a completion that another service drove (the
// complete-ticket saga); recording it again changes nothing.
func (s *Service) Record(ctx context.Context, c Completion) (Completion, error) {
	var chk svc.Check
	chk.Required("ticket_id", c.TicketID, 64)
	chk.Required("customer_id", c.CustomerID, 64)
	chk.Required("expert_id", c.ExpertID, 64)
	chk.Required("notes", c.Notes, 4000)
	chk.Required("survey_id", c.SurveyID, 64)
	if err := chk.Err(); err != nil {
		return Completion{}, err
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	err := sqldb.RunInTx(ctx, s.db, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO completion (ticket_id, customer_id, expert_id, notes, survey_id, completed_at)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (ticket_id) DO NOTHING`, c.TicketID, c.CustomerID, c.ExpertID, c.Notes,
			c.SurveyID, svc.Micros(now))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		c.CompletedAt = now
		if err := svc.Emit(ctx, tx, Name, "sysops.completion.completed.v1", "completion", c.TicketID, c); err != nil {
			return err
		}
		return svc.Audit(ctx, tx, Name, "ticket.completed", "ticket", c.TicketID, map[string]string{"expert_id": c.ExpertID, "survey_id": c.SurveyID})
	})
	if err != nil {
		return Completion{}, err
	}
	return s.Get(ctx, c.TicketID)
}

// Get returns a ticket's completion.
func (s *Service) Get(ctx context.Context, ticketID string) (Completion, error) {
	var c Completion
	var at int64
	err := s.db.QueryRowContext(ctx, `SELECT ticket_id, customer_id, expert_id, notes, survey_id, completed_at
		FROM completion WHERE ticket_id = $1`, ticketID).Scan(&c.TicketID, &c.CustomerID, &c.ExpertID, &c.Notes, &c.SurveyID, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return c, sysops.Errorf(sysops.ENotFound, "ticket %q has not been completed", ticketID)
	}
	c.CompletedAt = svc.FromMicros(at)
	return c, err
}

// Handler returns the service's HTTP API.
func (s *Service) Handler() http.Handler {
	rt := svc.NewRouter(s.logger)
	rt.Handle("POST /completions", func(w http.ResponseWriter, r *http.Request) error {
		var in struct {
			TicketID string `json:"ticket_id"`
			Notes    string `json:"notes"`
		}
		if err := httpx.DecodeJSON(w, r, &in); err != nil {
			return err
		}
		c, created, err := s.Complete(r.Context(), in.TicketID, in.Notes)
		if err != nil {
			return err
		}
		status := http.StatusOK
		if created {
			status = http.StatusCreated
		}
		httpx.WriteJSON(w, status, c)
		return nil
	})
	rt.Handle("POST /completions/{ticket_id}/record", func(w http.ResponseWriter, r *http.Request) error {
		var in struct {
			CustomerID string `json:"customer_id"`
			ExpertID   string `json:"expert_id"`
			Notes      string `json:"notes"`
			SurveyID   string `json:"survey_id"`
		}
		if err := httpx.DecodeJSON(w, r, &in); err != nil {
			return err
		}
		c, err := s.Record(r.Context(), Completion{TicketID: r.PathValue("ticket_id"), CustomerID: in.CustomerID,
			ExpertID: in.ExpertID, Notes: in.Notes, SurveyID: in.SurveyID})
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, c)
		return nil
	})
	rt.Handle("GET /completions/{ticket_id}", svc.Respond(http.StatusOK, func(r *http.Request) (any, error) {
		return s.Get(r.Context(), r.PathValue("ticket_id"))
	}))
	return rt
}
