// Package billing is the Billing service: the owner of billing_account
// (one per customer, with the monthly fee of its plan) and charge (the
// subscription charges and refunds). It is their only writer:
//
//	POST /accounts                 open an account: {"customer_id", "plan"}; charges the first month
//	GET  /accounts/{id}            one account, with its charges
//	GET  /accounts?customer_id=C   a customer's account
//	POST /accounts/{id}/close      close it, refunding the unused part of the month
//
// Every change publishes an event (sysops.billing.*) and an audit record
// through the service's outbox.
package billing

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
	"time"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/internal/host"
	"github.com/sysops-squad/sysops/internal/httpx"
	"github.com/sysops-squad/sysops/internal/svc"
	"github.com/sysops-squad/sysops/outbox"
	"github.com/sysops-squad/sysops/sqldb"
)

// Name is the service's name.
const Name = "billing"

// MonthlyFeeCents is the price of each support plan.
var MonthlyFeeCents = map[string]int{"basic": 1900, "standard": 4900, "premium": 9900}

// BillingPeriod is the length of the month a fee pays for.
const BillingPeriod = 30 * 24 * time.Hour

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

// Account is a billing account with its charges.
type Account struct {
	ID              string     `json:"id"`
	CustomerID      string     `json:"customer_id"`
	Plan            string     `json:"plan"`
	MonthlyFeeCents int        `json:"monthly_fee_cents"`
	Status          string     `json:"status"`
	OpenedAt        time.Time  `json:"opened_at"`
	ClosedAt        *time.Time `json:"closed_at,omitempty"`
	BalanceCents    int        `json:"balance_cents"`
	Charges         []Charge   `json:"charges"`
}

// Charge is one charge (positive) or refund (negative).
type Charge struct {
	ID          string    `json:"id"`
	Kind        string    `json:"kind"`
	AmountCents int       `json:"amount_cents"`
	Description string    `json:"description"`
	CreatedAt   time.Time `json:"created_at"`
}

// Service is the Billing service.
type Service struct {
	db     *sqldb.DB
	logger *slog.Logger
	now    func() time.Time
}

// New returns the service over its database.
func New(db *sqldb.DB, logger *slog.Logger) *Service {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Service{db: db, logger: logger, now: func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }}
}

func plans() []string { return []string{"basic", "standard", "premium"} }

// Open opens a customer's account and charges the plan's first month. id
// is optional (a saga chooses it); opening a chosen id again returns the
// account (created is false), and an id closed before it was opened is
// refused.
func (s *Service) Open(ctx context.Context, id, customerID, plan string) (a Account, created bool, err error) {
	var c svc.Check
	c.Optional("id", id, 64)
	c.Required("customer_id", customerID, 64)
	c.OneOf("plan", plan, plans()...)
	if err := c.Err(); err != nil {
		return Account{}, false, err
	}
	now := s.now()
	id = cmp.Or(id, outbox.NewID())
	fee := MonthlyFeeCents[plan]
	err = sqldb.RunInScope(ctx, s.db, func(tx *sql.Tx) error {
		created = false
		if err := sqldb.LockKey(ctx, tx, "account/"+id); err != nil {
			return err
		}
		var owner string
		err := tx.QueryRowContext(ctx, `SELECT customer_id FROM billing_account WHERE id = $1`, id).Scan(&owner)
		if err == nil {
			if owner != customerID {
				return sysops.Errorf(sysops.EConflict, "billing account %q belongs to another customer", id)
			}
			return nil
		} else if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if dead, err := svc.Tombstoned(ctx, tx, "billing_account_tombstone", id); err != nil {
			return err
		} else if dead {
			return sysops.Errorf(sysops.EConflict, "billing account %q was closed before it was opened", id)
		}
		created = true
		if _, err := tx.ExecContext(ctx, `INSERT INTO billing_account (id, customer_id, plan, monthly_fee_cents, status, opened_at)
			VALUES ($1, $2, $3, $4, 'open', $5)`, id, customerID, plan, fee, svc.Micros(now)); err != nil {
			if sqldb.IsUniqueViolation(err) {
				return sysops.Errorf(sysops.EConflict, "customer %q already has a billing account", customerID)
			}
			return err
		}
		if err := addCharge(ctx, tx, id, "subscription", fee, fmt.Sprintf("%s plan, first month", plan), now); err != nil {
			return err
		}
		ev := map[string]any{"account_id": id, "customer_id": customerID, "plan": plan, "monthly_fee_cents": fee}
		if err := svc.Emit(ctx, tx, Name, "sysops.billing.account_opened.v1", "billing_account", id, ev); err != nil {
			return err
		}
		return svc.Audit(ctx, tx, Name, "billing.account_opened", "billing_account", id, ev)
	})
	if err != nil {
		return Account{}, false, err
	}
	a, err = s.Get(ctx, id)
	return a, created, err
}

func addCharge(ctx context.Context, tx *sql.Tx, account, kind string, cents int, desc string, at time.Time) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO charge (id, account_id, kind, amount_cents, description, created_at)
		VALUES ($1, $2, $3, $4, $5, $6)`, outbox.NewID(), account, kind, cents, desc, svc.Micros(at))
	return err
}

// Get returns an account with its charges.
func (s *Service) Get(ctx context.Context, id string) (Account, error) {
	return s.get(ctx, `id = $1`, id)
}

// ForCustomer returns a customer's account.
func (s *Service) ForCustomer(ctx context.Context, customerID string) (Account, error) {
	return s.get(ctx, `customer_id = $1`, customerID)
}

func (s *Service) get(ctx context.Context, where, arg string) (Account, error) {
	var a Account
	var opened int64
	var closed sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT id, customer_id, plan, monthly_fee_cents, status, opened_at, closed_at
		FROM billing_account WHERE `+where, arg).Scan(&a.ID, &a.CustomerID, &a.Plan, &a.MonthlyFeeCents, &a.Status, &opened, &closed)
	if errors.Is(err, sql.ErrNoRows) {
		return a, sysops.Errorf(sysops.ENotFound, "billing account for %q not found", arg)
	}
	if err != nil {
		return a, err
	}
	a.OpenedAt = svc.FromMicros(opened)
	if closed.Valid {
		t := svc.FromMicros(closed.Int64)
		a.ClosedAt = &t
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, kind, amount_cents, description, created_at FROM charge
		WHERE account_id = $1 ORDER BY created_at, id`, a.ID)
	if err != nil {
		return a, err
	}
	defer rows.Close()
	a.Charges = []Charge{}
	for rows.Next() {
		var ch Charge
		var at int64
		if err := rows.Scan(&ch.ID, &ch.Kind, &ch.AmountCents, &ch.Description, &at); err != nil {
			return a, err
		}
		ch.CreatedAt = svc.FromMicros(at)
		a.BalanceCents += ch.AmountCents
		a.Charges = append(a.Charges, ch)
	}
	return a, rows.Err()
}

// Close closes an open account and refunds the unused part of the month
// paid by its last subscription charge (the business reversal of that
// charge); closing a closed account changes nothing. An id not opened yet
// is tombstoned, so that opening it later is refused (a saga's
// compensation may overtake its action).
func (s *Service) Close(ctx context.Context, id string) (Account, error) {
	now := s.now()
	tombstoned := false
	err := sqldb.RunInScope(ctx, s.db, func(tx *sql.Tx) error {
		tombstoned = false
		if err := sqldb.LockKey(ctx, tx, "account/"+id); err != nil {
			return err
		}
		var fee int
		var status string
		err := tx.QueryRowContext(ctx, `SELECT monthly_fee_cents, status FROM billing_account WHERE id = $1`, id).Scan(&fee, &status)
		if errors.Is(err, sql.ErrNoRows) {
			tombstoned = true
			return svc.Tombstone(ctx, tx, "billing_account_tombstone", id)
		}
		if err != nil || status == "closed" {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE billing_account SET status = 'closed', closed_at = $1 WHERE id = $2 AND status = 'open'`,
			svc.Micros(now), id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil // closed meanwhile
		}
		var last int64
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(created_at), 0) FROM charge WHERE account_id = $1 AND kind = 'subscription'`,
			id).Scan(&last); err != nil {
			return err
		}
		refund := Prorated(fee, svc.FromMicros(last), now)
		if refund > 0 {
			if err := addCharge(ctx, tx, id, "refund", -refund, "prorated refund of the unused month", now); err != nil {
				return err
			}
		}
		ev := map[string]any{"account_id": id, "refund_cents": refund}
		if err := svc.Emit(ctx, tx, Name, "sysops.billing.account_closed.v1", "billing_account", id, ev); err != nil {
			return err
		}
		return svc.Audit(ctx, tx, Name, "billing.account_closed", "billing_account", id, ev)
	})
	if err != nil {
		return Account{}, err
	}
	if tombstoned {
		return Account{ID: id, Status: "closed", Charges: []Charge{}}, nil
	}
	return s.Get(ctx, id)
}

// Prorated returns the part of a monthly fee, charged at paidAt, that is
// not used by now: whole days left in the 30-day period.
func Prorated(feeCents int, paidAt, now time.Time) int {
	used := now.Sub(paidAt)
	if used < 0 {
		used = 0
	}
	if used >= BillingPeriod {
		return 0
	}
	daysLeft := int((BillingPeriod - used) / (24 * time.Hour))
	return feeCents * daysLeft / 30
}

// Handler returns the service's HTTP API.
func (s *Service) Handler() http.Handler {
	rt := svc.NewRouter(s.logger)
	rt.Handle("POST /accounts", func(w http.ResponseWriter, r *http.Request) error {
		var in struct {
			ID         string `json:"id"`
			CustomerID string `json:"customer_id"`
			Plan       string `json:"plan"`
		}
		if err := httpx.DecodeJSON(w, r, &in); err != nil {
			return err
		}
		a, created, err := s.Open(r.Context(), in.ID, in.CustomerID, in.Plan)
		if err != nil {
			return err
		}
		svc.WriteCreated(w, created, "/accounts/"+a.ID, a)
		return nil
	})
	rt.Handle("GET /accounts/{id}", svc.Respond(http.StatusOK, func(r *http.Request) (any, error) {
		return s.Get(r.Context(), r.PathValue("id"))
	}))
	rt.Handle("GET /accounts", func(w http.ResponseWriter, r *http.Request) error {
		id := r.URL.Query().Get("customer_id")
		if id == "" {
			return sysops.Errorf(sysops.EInvalid, "query parameter customer_id is required")
		}
		a, err := s.ForCustomer(r.Context(), id)
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, a)
		return nil
	}, "customer_id")
	rt.Handle("POST /accounts/{id}/close", svc.Respond(http.StatusOK, func(r *http.Request) (any, error) {
		return s.Close(r.Context(), r.PathValue("id"))
	}))
	return rt
}
