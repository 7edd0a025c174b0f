// Package contract is the Contract service: the owner of the contract
// table, the customers' support plans (basic, standard, premium). It is
// the table's only writer:
//
//	POST /contracts                  register a plan for a customer
//	GET  /contracts/{id}             one contract
//	GET  /contracts?customer_id=C    a customer's contracts, newest first
//	POST /contracts/{id}/cancel      {"reason": "...", "op_id": "..."}: op_id names the request, which
//	                                 alone may cancel (without it, cancelling twice changes nothing)
//	POST /contracts/{id}/reinstate   {"op_id": "..."}: undo that op's cancellation (the compensation
//	                                 of a cancelled plan)
//
// Every change publishes an event (sysops.contract.*) and an audit record
// through the service's outbox.
package contract

import (
	"cmp"
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
const Name = "contract"

// Plans are the support plan tiers.
var Plans = []string{"basic", "standard", "premium"}

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

// Contract is one row of the contract table.
type Contract struct {
	ID           string     `json:"id"`
	CustomerID   string     `json:"customer_id"`
	Plan         string     `json:"plan"`
	Status       string     `json:"status"`
	StartedAt    time.Time  `json:"started_at"`
	CancelledAt  *time.Time `json:"cancelled_at,omitempty"`
	CancelReason string     `json:"cancel_reason,omitempty"`
}

// Service is the Contract service.
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

// Register starts a plan for a customer, who must have no active one. id
// is optional (a saga chooses it); registering a chosen id again returns
// the contract (created is false), and an id cancelled before it was
// registered is refused.
func (s *Service) Register(ctx context.Context, id, customerID, plan string) (k Contract, created bool, err error) {
	var c svc.Check
	c.Optional("id", id, 64)
	c.Required("customer_id", customerID, 64)
	c.OneOf("plan", plan, Plans...)
	if err := c.Err(); err != nil {
		return Contract{}, false, err
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	k = Contract{ID: cmp.Or(id, outbox.NewID()), CustomerID: customerID, Plan: plan, Status: "active", StartedAt: now}
	err = sqldb.RunInScope(ctx, s.db, func(tx *sql.Tx) error {
		created = false
		if err := sqldb.LockKey(ctx, tx, "contract/"+k.ID); err != nil {
			return err
		}
		if existing, err := scan(tx.QueryRowContext(ctx, `SELECT `+columns+` FROM contract WHERE id = $1`, k.ID)); err == nil {
			if existing.CustomerID != customerID {
				return sysops.Errorf(sysops.EConflict, "contract %q belongs to another customer", k.ID)
			}
			k = existing
			return nil
		} else if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if dead, err := svc.Tombstoned(ctx, tx, "contract_tombstone", k.ID); err != nil {
			return err
		} else if dead {
			return sysops.Errorf(sysops.EConflict, "contract %q was cancelled before it was registered", k.ID)
		}
		created = true
		if _, err := tx.ExecContext(ctx, `INSERT INTO contract (id, customer_id, plan, status, started_at)
			VALUES ($1, $2, $3, 'active', $4)`, k.ID, k.CustomerID, k.Plan, svc.Micros(now)); err != nil {
			if sqldb.IsUniqueViolation(err) {
				return sysops.Errorf(sysops.EConflict, "customer %q already has an active support plan", customerID)
			}
			return err
		}
		if err := svc.Emit(ctx, tx, Name, "sysops.contract.registered.v1", "contract", k.ID, k); err != nil {
			return err
		}
		return svc.Audit(ctx, tx, Name, "contract.registered", "contract", k.ID, map[string]string{"customer_id": customerID, "plan": plan})
	})
	return k, created, err
}

const columns = `id, customer_id, plan, status, started_at, cancelled_at, cancel_reason`

func scan(row svc.Scanner) (Contract, error) { return scanMore(row) }

// scanMore reads a row of columns, and of more columns into more.
func scanMore(row svc.Scanner, more ...any) (Contract, error) {
	var k Contract
	var started int64
	var cancelled sql.NullInt64
	err := row.Scan(append([]any{&k.ID, &k.CustomerID, &k.Plan, &k.Status, &started, &cancelled, &k.CancelReason}, more...)...)
	k.StartedAt = svc.FromMicros(started)
	if cancelled.Valid {
		t := svc.FromMicros(cancelled.Int64)
		k.CancelledAt = &t
	}
	return k, err
}

// Get returns one contract.
func (s *Service) Get(ctx context.Context, id string) (Contract, error) {
	k, err := scan(s.db.QueryRowContext(ctx, `SELECT `+columns+` FROM contract WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return k, sysops.Errorf(sysops.ENotFound, "contract %q not found", id)
	}
	return k, err
}

// ForCustomer returns a customer's contracts, newest first.
func (s *Service) ForCustomer(ctx context.Context, customerID string) ([]Contract, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+columns+` FROM contract WHERE customer_id = $1 ORDER BY started_at DESC, id`, customerID)
	return svc.Collect(rows, err, scan)
}

// Cancel ends an active contract. op, when given, names the request
// (a saga's step) that cancels: a contract is cancelled by one op, and
// another asking for it then is refused (409 already cancelled), as is an
// op whose compensation came first ([Service.Reinstate]). Without op,
// cancelling a cancelled contract changes nothing, and an id not
// registered yet is tombstoned, so that registering it later is refused:
// that is the compensation of a registration, which may overtake its
// action.
func (s *Service) Cancel(ctx context.Context, id, reason, op string) (Contract, error) {
	var c svc.Check
	c.Optional("reason", reason, 500)
	c.Optional("op_id", op, 200)
	if err := c.Err(); err != nil {
		return Contract{}, err
	}
	var k Contract
	err := sqldb.RunInScope(ctx, s.db, func(tx *sql.Tx) error {
		if err := sqldb.LockKey(ctx, tx, "contract/"+id); err != nil {
			return err
		}
		var err error
		var by string
		k, by, err = read(ctx, tx, id)
		switch {
		case errors.Is(err, sql.ErrNoRows) && op == "":
			k = Contract{ID: id, Status: "cancelled"}
			return svc.Tombstone(ctx, tx, "contract_tombstone", id)
		case errors.Is(err, sql.ErrNoRows):
			return sysops.Errorf(sysops.ENotFound, "contract %q not found", id)
		case err != nil:
			return err
		}
		if op != "" {
			if undone, err := svc.Tombstoned(ctx, tx, "contract_cancel_undone", op); err != nil {
				return err
			} else if undone {
				return sysops.Errorf(sysops.EConflict, "cancellation %q of contract %q was undone before it arrived", op, id)
			}
			if k.Status == "cancelled" && by != op {
				return sysops.Errorf(sysops.EConflict, "contract %q is already cancelled", id)
			}
		}
		if k.Status == "cancelled" {
			return nil
		}
		now := time.Now().UTC().Truncate(time.Microsecond)
		if _, err := tx.ExecContext(ctx, `UPDATE contract SET status = 'cancelled', cancelled_at = $1, cancel_reason = $2, cancel_op = $3
			WHERE id = $4`, svc.Micros(now), reason, op, id); err != nil {
			return err
		}
		k.Status, k.CancelledAt, k.CancelReason = "cancelled", &now, reason
		if err := svc.Emit(ctx, tx, Name, "sysops.contract.cancelled.v1", "contract", k.ID, k); err != nil {
			return err
		}
		return svc.Audit(ctx, tx, Name, "contract.cancelled", "contract", k.ID, map[string]string{"reason": reason})
	})
	return k, err
}

// read returns a contract and the op that cancelled it.
func read(ctx context.Context, tx *sql.Tx, id string) (Contract, string, error) {
	var by string
	k, err := scanMore(tx.QueryRowContext(ctx, `SELECT `+columns+`, cancel_op FROM contract WHERE id = $1`, id), &by)
	return k, by, err
}

// Reinstate undoes the cancellation made by op — the compensation of a
// cancellation that could not complete — making the contract active
// again. A contract that op did not cancel (still active: the
// cancellation has not arrived, or never will; or cancelled by another
// request) is left as it is, with nothing to undo, and op is recorded as
// undone so that its late arrival is refused. A customer who has another
// active plan meanwhile is a conflict.
func (s *Service) Reinstate(ctx context.Context, id, op string) (Contract, error) {
	var c svc.Check
	c.Required("op_id", op, 200)
	if err := c.Err(); err != nil {
		return Contract{}, err
	}
	var k Contract
	err := sqldb.RunInScope(ctx, s.db, func(tx *sql.Tx) error {
		if err := sqldb.LockKey(ctx, tx, "contract/"+id); err != nil {
			return err
		}
		var err error
		var by string
		k, by, err = read(ctx, tx, id)
		if errors.Is(err, sql.ErrNoRows) {
			return sysops.Errorf(sysops.ENotFound, "contract %q not found", id)
		}
		if err != nil {
			return err
		}
		if err := svc.Tombstone(ctx, tx, "contract_cancel_undone", op); err != nil {
			return err
		}
		if k.Status != "cancelled" || by != op {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE contract SET status = 'active', cancelled_at = NULL, cancel_reason = '', cancel_op = ''
			WHERE id = $1`, id); err != nil {
			if sqldb.IsUniqueViolation(err) {
				return sysops.Errorf(sysops.EConflict, "customer %q has another active support plan", k.CustomerID)
			}
			return err
		}
		k.Status, k.CancelledAt, k.CancelReason = "active", nil, ""
		if err := svc.Emit(ctx, tx, Name, "sysops.contract.reinstated.v1", "contract", k.ID, k); err != nil {
			return err
		}
		return svc.Audit(ctx, tx, Name, "contract.reinstated", "contract", k.ID, map[string]string{"op_id": op})
	})
	return k, err
}

// Handler returns the service's HTTP API.
func (s *Service) Handler() http.Handler {
	rt := svc.NewRouter(s.logger)
	rt.Handle("POST /contracts", func(w http.ResponseWriter, r *http.Request) error {
		var in struct {
			ID         string `json:"id"`
			CustomerID string `json:"customer_id"`
			Plan       string `json:"plan"`
		}
		if err := httpx.DecodeJSON(w, r, &in); err != nil {
			return err
		}
		k, created, err := s.Register(r.Context(), in.ID, in.CustomerID, in.Plan)
		if err != nil {
			return err
		}
		svc.WriteCreated(w, created, "/contracts/"+k.ID, k)
		return nil
	})
	rt.Handle("GET /contracts/{id}", svc.Respond(http.StatusOK, func(r *http.Request) (any, error) {
		return s.Get(r.Context(), r.PathValue("id"))
	}))
	rt.Handle("GET /contracts", func(w http.ResponseWriter, r *http.Request) error {
		id := r.URL.Query().Get("customer_id")
		if id == "" {
			return sysops.Errorf(sysops.EInvalid, "query parameter customer_id is required")
		}
		ks, err := s.ForCustomer(r.Context(), id)
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"contracts": ks})
		return nil
	}, "customer_id")
	rt.Handle("POST /contracts/{id}/reinstate", svc.WithBody(http.StatusOK, func(r *http.Request, in struct {
		OpID string `json:"op_id"`
	}) (any, error) {
		return s.Reinstate(r.Context(), r.PathValue("id"), in.OpID)
	}))
	rt.Handle("POST /contracts/{id}/cancel", svc.WithBody(http.StatusOK, func(r *http.Request, in struct {
		Reason string `json:"reason"`
		OpID   string `json:"op_id"`
	}) (any, error) {
		return s.Cancel(r.Context(), r.PathValue("id"), in.Reason, in.OpID)
	}))
	return rt
}
