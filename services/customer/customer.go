// Package customer is the Customer service: the owner of the customer
// table (profile: name, e-mail, zip, and the count of open tickets). It
// is the table's only writer; others read customers through its API:
//
//	POST /customers                     register a profile
//	GET  /customers/{id}                one customer
//	GET  /customers?email=E&limit=N     customers, newest first
//	POST /customers/{id}/open-tickets   {"delta": 1 or -1, "op_id": optional}
//	POST /customers/{id}/open-tickets/{op_id}/undo   undo (or void) that change
//	POST /customers/{id}/close          close the profile (or tombstone an id not registered yet)
//	POST /customers/{id}/support-plan   {"plan": "basic" | "standard" | "premium" | ""}: the plan the profile shows
//	POST /batch                         several open-tickets and undo calls, each with its
//	                                    own key, in one transaction
//
// Every change publishes an event (sysops.customer.*) and an audit record
// through the service's outbox.
package customer

import (
	"cmp"
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/idempotency"
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

// Customer is one row of the customer table.
type Customer struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Email       string    `json:"email"`
	Zip         string    `json:"zip"`
	OpenTickets int       `json:"open_tickets"`
	Status      string    `json:"status"`
	SupportPlan string    `json:"support_plan"`
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
	// ID is optional: a saga chooses it, so that it can close the profile
	// before it knows whether registering it succeeded.
	ID    string `json:"id,omitempty"`
	Name  string `json:"name"`
	Email string `json:"email"`
	Zip   string `json:"zip"`
	// SupportPlan is the plan the profile shows; optional.
	SupportPlan string `json:"support_plan,omitempty"`
}

// Register creates a customer. With a chosen id, registering it again
// returns it (created is false); an id closed before it was registered is
// refused.
func (s *Service) Register(ctx context.Context, in NewCustomer) (cu Customer, created bool, err error) {
	in.Email = strings.ToLower(strings.TrimSpace(in.Email))
	var c svc.Check
	c.Optional("id", in.ID, 64)
	c.Required("name", in.Name, 200)
	c.Email("email", in.Email)
	c.Zip("zip", in.Zip)
	if in.SupportPlan != "" {
		c.OneOf("support_plan", in.SupportPlan, "basic", "standard", "premium")
	}
	if err := c.Err(); err != nil {
		return Customer{}, false, err
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	cu = Customer{ID: cmp.Or(in.ID, outbox.NewID()), Name: strings.TrimSpace(in.Name), Email: in.Email, Zip: in.Zip, Status: "active",
		SupportPlan: in.SupportPlan, CreatedAt: now, UpdatedAt: now}
	err = sqldb.RunInScope(ctx, s.db, func(tx *sql.Tx) error {
		created = false
		if err := sqldb.LockKey(ctx, tx, "customer/"+cu.ID); err != nil {
			return err
		}
		if existing, err := scan(tx.QueryRowContext(ctx, `SELECT `+columns+` FROM customer WHERE id = $1`, cu.ID)); err == nil {
			if existing.Email != cu.Email {
				return sysops.Errorf(sysops.EConflict, "customer %q exists with another email", cu.ID)
			}
			cu = existing
			return nil
		} else if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if dead, err := svc.Tombstoned(ctx, tx, "customer_tombstone", cu.ID); err != nil {
			return err
		} else if dead {
			return sysops.Errorf(sysops.EConflict, "customer %q was closed before it was registered", cu.ID)
		}
		created = true
		if _, err := tx.ExecContext(ctx, `INSERT INTO customer (id, name, email, zip, open_tickets, support_plan, created_at, updated_at)
			VALUES ($1, $2, $3, $4, 0, $5, $6, $6)`, cu.ID, cu.Name, cu.Email, cu.Zip, cu.SupportPlan, svc.Micros(now)); err != nil {
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
	return cu, created, err
}

// Close closes a customer's profile (the compensation of a registration);
// closing a closed one changes nothing. An id not registered yet is
// tombstoned, so that registering it later is refused.
func (s *Service) Close(ctx context.Context, id string) (Customer, error) {
	cu := Customer{ID: id, Status: "closed"}
	err := sqldb.RunInScope(ctx, s.db, func(tx *sql.Tx) error {
		if err := sqldb.LockKey(ctx, tx, "customer/"+id); err != nil {
			return err
		}
		existing, err := scan(tx.QueryRowContext(ctx, `SELECT `+columns+` FROM customer WHERE id = $1`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return svc.Tombstone(ctx, tx, "customer_tombstone", id)
		}
		if err != nil {
			return err
		}
		cu = existing
		if cu.Status == "closed" {
			return nil
		}
		now := time.Now().UTC().Truncate(time.Microsecond)
		if _, err := tx.ExecContext(ctx, `UPDATE customer SET status = 'closed', updated_at = $1 WHERE id = $2`, svc.Micros(now), id); err != nil {
			return err
		}
		cu.Status, cu.UpdatedAt = "closed", now
		if err := svc.Emit(ctx, tx, Name, "sysops.customer.closed.v1", "customer", id, map[string]string{"customer_id": id}); err != nil {
			return err
		}
		return svc.Audit(ctx, tx, Name, "customer.closed", "customer", id, nil)
	})
	return cu, err
}

const columns = `id, name, email, zip, open_tickets, status, support_plan, created_at, updated_at`

func scan(row svc.Scanner) (Customer, error) {
	var c Customer
	var created, updated int64
	err := row.Scan(&c.ID, &c.Name, &c.Email, &c.Zip, &c.OpenTickets, &c.Status, &c.SupportPlan, &created, &updated)
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
	return svc.Collect(rows, err, scan)
}

// SetSupportPlan records the support plan the profile shows ("" for
// none); setting the plan it has changes nothing.
func (s *Service) SetSupportPlan(ctx context.Context, id, plan string) (Customer, error) {
	if plan != "" {
		var c svc.Check
		c.OneOf("plan", plan, "basic", "standard", "premium")
		if err := c.Err(); err != nil {
			return Customer{}, err
		}
	}
	var cu Customer
	err := sqldb.RunInScope(ctx, s.db, func(tx *sql.Tx) error {
		var err error
		cu, err = scan(tx.QueryRowContext(ctx, `SELECT `+columns+` FROM customer WHERE id = $1`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return sysops.Errorf(sysops.ENotFound, "customer %q not found", id)
		}
		if err != nil || cu.SupportPlan == plan {
			return err
		}
		now := time.Now().UTC().Truncate(time.Microsecond)
		if _, err := tx.ExecContext(ctx, `UPDATE customer SET support_plan = $1, updated_at = $2 WHERE id = $3`, plan, svc.Micros(now), id); err != nil {
			return err
		}
		cu.SupportPlan, cu.UpdatedAt = plan, now
		ev := map[string]string{"customer_id": id, "support_plan": plan}
		if err := svc.Emit(ctx, tx, Name, "sysops.customer.support_plan_changed.v1", "customer", id, ev); err != nil {
			return err
		}
		return svc.Audit(ctx, tx, Name, "customer.support_plan_changed", "customer", id, ev)
	})
	return cu, err
}

// AdjustOpenTickets adds delta (1 or -1) to a customer's open_tickets; it
// never goes below zero. With an op id the change applies once however
// often it is repeated, and is refused if it was undone before it arrived.
func (s *Service) AdjustOpenTickets(ctx context.Context, id string, delta int, opID string) (Customer, error) {
	if err := checkAdjust(delta, opID); err != nil {
		return Customer{}, err
	}
	var cu Customer
	err := sqldb.RunInScope(ctx, s.db, func(tx *sql.Tx) error {
		var err error
		cu, err = s.adjustOp(ctx, tx, id, delta, opID)
		return err
	})
	return cu, err
}

func checkAdjust(delta int, opID string) error {
	if delta != 1 && delta != -1 {
		return sysops.Errorf(sysops.EInvalid, "field \"delta\" must be 1 or -1, not %d", delta)
	}
	var c svc.Check
	c.Optional("op_id", opID, 200)
	return c.Err()
}

// adjustOp is the work of AdjustOpenTickets in tx.
func (s *Service) adjustOp(ctx context.Context, tx *sql.Tx, id string, delta int, opID string) (Customer, error) {
	if opID != "" {
		// The op's row, inserted first, is its lock: a concurrent undo or
		// repeat of the op waits for this transaction, and one that came
		// first makes this insert do nothing.
		res, err := tx.ExecContext(ctx, `INSERT INTO open_tickets_op (op_id, customer_id, delta, state, updated_at)
			VALUES ($1, $2, $3, 'applied', $4) ON CONFLICT (op_id) DO NOTHING`, opID, id, delta, svc.Micros(time.Now()))
		if err != nil {
			return Customer{}, err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return appliedBefore(ctx, tx, id, opID)
		}
	}
	return s.adjust(ctx, tx, id, delta)
}

// appliedBefore answers an op whose row exists: the customer as it is if
// the op was applied, a conflict if it was undone before it arrived.
func appliedBefore(ctx context.Context, tx *sql.Tx, id, opID string) (Customer, error) {
	var state string
	if err := tx.QueryRowContext(ctx, `SELECT state FROM open_tickets_op WHERE op_id = $1`, opID).Scan(&state); err != nil {
		return Customer{}, err
	}
	if state == "voided" {
		return Customer{}, sysops.Errorf(sysops.EConflict, "operation %q was undone before it arrived", opID)
	}
	cu, err := scan(tx.QueryRowContext(ctx, `SELECT `+columns+` FROM customer WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return cu, sysops.Errorf(sysops.ENotFound, "customer %q not found", id)
	}
	return cu, err // applied before: nothing more to do
}

// forUpdate is the row lock clause of the dialect (SQLite runs one writer
// at a time and has none).
func (s *Service) forUpdate() string {
	if s.db.Dialect() == sqldb.Postgres {
		return " FOR UPDATE"
	}
	return ""
}

// adjustBatch applies a batch of POST /customers/{id}/open-tickets calls.
// The calls that add one with an op id (a saga counting a ticket) take
// three statements for the whole batch: the ops' rows, one update per
// customer adding its count, and their events with the commit. The
// others, and ops that exist already, are applied one by one, as alone.
func (s *Service) adjustBatch(ctx context.Context, tx *sql.Tx, items []*idempotency.Item) error {
	type call struct {
		it       *idempotency.Item
		id, opID string
		delta    int
		inSet    bool
		customer Customer
	}
	var calls []*call
	for _, it := range items {
		var in struct {
			Delta int    `json:"delta"`
			OpID  string `json:"op_id"`
		}
		if err := httpx.Unmarshal(it.Body, &in); err != nil {
			it.Fail(err)
			continue
		}
		if err := checkAdjust(in.Delta, in.OpID); err != nil {
			it.Fail(err)
			continue
		}
		calls = append(calls, &call{it: it, id: it.Request.PathValue("id"), opID: in.OpID, delta: in.Delta})
	}
	now := svc.Micros(time.Now())
	// The ops' rows, of customers that exist, in op order (they are the
	// ops' locks).
	var set []*call
	seen := map[string]bool{}
	for _, c := range calls {
		if c.delta == 1 && c.opID != "" && !seen[c.opID] {
			seen[c.opID] = true
			set = append(set, c)
		}
	}
	slices.SortFunc(set, func(a, b *call) int { return strings.Compare(a.opID, b.opID) })
	if len(set) > 0 {
		values, args := sqldb.Rows(1, "(?, ?)", len(set), func(i int) []any { return []any{set[i].opID, set[i].id} })
		list, idArgs := sqldb.Rows(1+len(args), "?", len(set), func(i int) []any { return []any{set[i].id} })
		inserted, err := svc.Returned(tx.QueryContext(ctx, `WITH v (op_id, customer_id) AS (VALUES `+values+`)
			INSERT INTO open_tickets_op (op_id, customer_id, delta, state, updated_at)
			SELECT v.op_id, v.customer_id, 1, 'applied', $1 FROM v WHERE v.customer_id IN (SELECT id FROM customer WHERE id IN (`+list+`))
			ON CONFLICT (op_id) DO NOTHING RETURNING op_id`, append(append([]any{now}, args...), idArgs...)...))
		if err != nil {
			return err
		}
		// One update per customer, adding its number of new ops.
		counts := map[string]int{}
		var order []string
		for _, c := range set {
			if c.inSet = inserted[c.opID]; c.inSet {
				if counts[c.id] == 0 {
					order = append(order, c.id)
				}
				counts[c.id]++
			}
		}
		if len(order) > 0 {
			after, err := s.addCounts(ctx, tx, counts, now)
			if err != nil {
				return err
			}
			// Each op sees the count as it left it, in op order.
			for _, c := range set {
				if !c.inSet {
					continue
				}
				cu, ok := after[c.id]
				if !ok {
					return fmt.Errorf("customer %q vanished while its ops were applied", c.id)
				}
				counts[c.id]--
				cu.OpenTickets -= counts[c.id]
				c.customer = cu
				if err := counted(ctx, tx, c.id, 1, cu.OpenTickets); err != nil {
					return err
				}
			}
		}
	}
	for _, c := range calls {
		if c.inSet {
			c.it.Reply(http.StatusOK, "", c.customer)
			continue
		}
		err := c.it.Apply(ctx, tx, func() (int, string, any, error) {
			cu, err := s.adjustOp(ctx, tx, c.id, c.delta, c.opID)
			return http.StatusOK, "", cu, err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// addCounts adds counts[id] to each customer's open_tickets in one
// statement, except where the count would go below zero, and returns the
// customers it changed, as changed. The rows are locked in id order
// first, as every batch takes them, so that two batches sharing customers
// wait for each other instead of deadlocking.
func (s *Service) addCounts(ctx context.Context, tx *sql.Tx, counts map[string]int, now int64) (map[string]Customer, error) {
	ids := slices.Sorted(maps.Keys(counts))
	values, args := sqldb.Rows(1, "(?, CAST(? AS INTEGER))", len(ids), func(i int) []any { return []any{ids[i], counts[ids[i]]} })
	list, idArgs := sqldb.Rows(1+len(args), "?", len(ids), func(i int) []any { return []any{ids[i]} })
	// The rows are found by key (an IN list), never by a join with the
	// batch's rows, which can be planned as a scan of the whole table.
	rows, err := tx.QueryContext(ctx, `WITH v (id, n) AS (VALUES `+values+`),
		locked AS MATERIALIZED (SELECT id FROM customer WHERE id IN (`+list+`) ORDER BY id`+s.forUpdate()+`)
		UPDATE customer SET open_tickets = open_tickets + (SELECT n FROM v WHERE v.id = customer.id), updated_at = $1
		WHERE id IN (`+list+`) AND id IN (SELECT id FROM locked) AND open_tickets + (SELECT n FROM v WHERE v.id = customer.id) >= 0
		RETURNING `+columns, append(append([]any{now}, args...), idArgs...)...)
	cus, err := svc.Collect(rows, err, scan)
	if err != nil {
		return nil, err
	}
	after := make(map[string]Customer, len(cus))
	for _, cu := range cus {
		after[cu.ID] = cu
	}
	return after, nil
}

// undoBatch applies a batch of undo calls. In the common case — the op
// added one to this customer's count — the ops are marked undone in one
// statement and the counts taken down in one more; the ops that never
// arrived are voided in one insert, so that they are refused if they
// arrive later (the void is also the op's lock, as alone). The ops' rows
// are taken in op order, then the customers' in id order, as the batches
// that count take them. The rest — undone already, or an op of another
// kind — are undone one by one, as alone.
func (s *Service) undoBatch(ctx context.Context, tx *sql.Tx, items []*idempotency.Item) error {
	type call struct {
		it        *idempotency.Item
		id, opID  string
		undone    bool // by the set statements; customer is its answer
		customer  Customer
		asCurrent bool // answered with the customer as the batch leaves it
	}
	calls := make([]*call, len(items))
	for i, it := range items {
		calls[i] = &call{it: it, id: it.Request.PathValue("id"), opID: it.Request.PathValue("op_id")}
	}
	slices.SortStableFunc(calls, func(a, b *call) int { return strings.Compare(a.opID, b.opID) })
	var ops []*call // the first call of each op
	for _, c := range calls {
		if len(ops) == 0 || ops[len(ops)-1].opID != c.opID {
			ops = append(ops, c)
		} else {
			c.asCurrent = true // a repeat finds its op undone or voided
		}
	}
	now := svc.Micros(time.Now())
	values, args := sqldb.Rows(1, "(?, ?)", len(ops), func(i int) []any { return []any{ops[i].opID, ops[i].id} })
	voided, err := svc.Returned(tx.QueryContext(ctx, `WITH v (op_id, customer_id) AS (VALUES `+values+`)
		INSERT INTO open_tickets_op (op_id, customer_id, delta, state, updated_at)
		SELECT op_id, customer_id, 0, 'voided', $1 FROM v ORDER BY op_id ON CONFLICT (op_id) DO NOTHING RETURNING op_id`,
		append([]any{now}, args...)...))
	if err != nil {
		return err
	}
	var rest []*call
	for _, c := range ops {
		if voided[c.opID] {
			c.asCurrent = true
		} else {
			rest = append(rest, c)
		}
	}
	if len(rest) > 0 {
		// Found by key (an IN list), never by a join with the batch's
		// rows, which can be planned as a scan of the whole table.
		list, args := sqldb.Rows(1, "?", len(rest), func(i int) []any { return []any{rest[i].opID} })
		rows, err := tx.QueryContext(ctx, `UPDATE open_tickets_op SET state = 'undone', updated_at = $1
			WHERE op_id IN (`+list+`) AND state = 'applied' AND delta = 1 RETURNING op_id, customer_id`, append([]any{now}, args...)...)
		type undoneOp struct{ opID, customerID string }
		found, err := svc.Collect(rows, err, func(r svc.Scanner) (undoneOp, error) {
			var o undoneOp
			return o, r.Scan(&o.opID, &o.customerID)
		})
		if err != nil {
			return err
		}
		undone := map[string]string{}
		for _, o := range found {
			undone[o.opID] = o.customerID
		}
		counts := map[string]int{}
		var back []string // ops of another customer than the call's: undone alone
		for _, c := range rest {
			customer, ok := undone[c.opID]
			switch {
			case !ok:
			case customer != c.id:
				back = append(back, c.opID)
			default:
				c.undone = true
				counts[c.id]--
			}
		}
		after := map[string]Customer{}
		if len(counts) > 0 {
			if after, err = s.addCounts(ctx, tx, counts, now); err != nil {
				return err
			}
		}
		// A customer whose count would go below zero (or who is
		// gone) keeps it: its ops go back to applied and are undone
		// alone, which refuses them as alone.
		for _, c := range rest {
			if c.undone && after[c.id].ID == "" {
				c.undone = false
				back = append(back, c.opID)
			}
		}
		if len(back) > 0 {
			list, args := sqldb.Rows(0, "?", len(back), func(i int) []any { return []any{back[i]} })
			if _, err := tx.ExecContext(ctx, `UPDATE open_tickets_op SET state = 'applied' WHERE op_id IN (`+list+`)`, args...); err != nil {
				return err
			}
		}
		// Each op sees the count as it left it, in op order.
		left := map[string]int{}
		for _, c := range rest {
			if c.undone {
				left[c.id]++
			}
		}
		for _, c := range rest {
			if !c.undone {
				continue
			}
			left[c.id]--
			c.customer = after[c.id]
			c.customer.OpenTickets += left[c.id]
			if err := counted(ctx, tx, c.id, -1, c.customer.OpenTickets); err != nil {
				return err
			}
		}
	}
	for _, c := range calls {
		if c.undone || c.asCurrent {
			continue
		}
		if err := c.it.Answer(func() (int, string, any, error) {
			cu, err := s.undo(ctx, tx, c.id, c.opID)
			return http.StatusOK, "", cu, err
		}); err != nil {
			return err
		}
	}
	// The others answer with their customer as the batch leaves it.
	var ids []string
	for _, c := range calls {
		if c.asCurrent && !slices.Contains(ids, c.id) {
			ids = append(ids, c.id)
		}
	}
	current := map[string]Customer{}
	if len(ids) > 0 {
		list, args := sqldb.Rows(0, "?", len(ids), func(i int) []any { return []any{ids[i]} })
		rows, err := tx.QueryContext(ctx, `SELECT `+columns+` FROM customer WHERE id IN (`+list+`)`, args...)
		cus, err := svc.Collect(rows, err, scan)
		if err != nil {
			return err
		}
		for _, cu := range cus {
			current[cu.ID] = cu
		}
	}
	for _, c := range calls {
		switch {
		case c.undone:
			c.it.Reply(http.StatusOK, "", c.customer)
		case c.asCurrent:
			cu, ok := current[c.id]
			if !ok {
				cu = Customer{ID: c.id}
			}
			c.it.Reply(http.StatusOK, "", cu)
		}
	}
	return nil
}

// UndoOpenTickets reverses the change made by op id (the compensation of
// a saga step). Undoing twice is the same as once; undoing a change that
// never arrived voids it, so it is refused if it arrives later.
func (s *Service) UndoOpenTickets(ctx context.Context, id, opID string) (Customer, error) {
	var cu Customer
	err := sqldb.RunInScope(ctx, s.db, func(tx *sql.Tx) error {
		var err error
		cu, err = s.undo(ctx, tx, id, opID)
		return err
	})
	return cu, err
}

// undo is the work of UndoOpenTickets in tx. It refuses only before it
// writes.
func (s *Service) undo(ctx context.Context, tx *sql.Tx, id, opID string) (Customer, error) {
	now := svc.Micros(time.Now())
	current := func() (Customer, error) {
		cu, err := scan(tx.QueryRowContext(ctx, `SELECT `+columns+` FROM customer WHERE id = $1`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return Customer{ID: id}, nil
		}
		return cu, err
	}
	// An op that never arrived is voided, so that it is refused if it
	// arrives later; inserting the void first is also the op's lock (see
	// AdjustOpenTickets).
	res, err := tx.ExecContext(ctx, `INSERT INTO open_tickets_op (op_id, customer_id, delta, state, updated_at)
		VALUES ($1, $2, 0, 'voided', $3) ON CONFLICT (op_id) DO NOTHING`, opID, id, now)
	if err != nil {
		return Customer{}, err
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return current()
	}
	var state string
	var delta int
	lock := ""
	if s.db.Dialect() == sqldb.Postgres {
		lock = " FOR UPDATE" // a concurrent undo waits, then finds it undone
	}
	if err := tx.QueryRowContext(ctx, `SELECT state, delta FROM open_tickets_op WHERE op_id = $1`+lock, opID).Scan(&state, &delta); err != nil {
		return Customer{}, err
	}
	if state != "applied" {
		return current()
	}
	cu, err := s.adjust(ctx, tx, id, -delta)
	if err != nil {
		return cu, err
	}
	_, err = tx.ExecContext(ctx, `UPDATE open_tickets_op SET state = 'undone', updated_at = $1 WHERE op_id = $2`, now, opID)
	return cu, err
}

func (s *Service) adjust(ctx context.Context, tx *sql.Tx, id string, delta int) (Customer, error) {
	now := time.Now().UTC()
	cu, err := scan(tx.QueryRowContext(ctx, `UPDATE customer SET open_tickets = open_tickets + $1, updated_at = $2
		WHERE id = $3 AND open_tickets + $1 >= 0 RETURNING `+columns, delta, svc.Micros(now), id))
	if errors.Is(err, sql.ErrNoRows) {
		// Nothing changed: no such customer, or no open ticket to take off.
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM customer WHERE id = $1`, id).Scan(&n); err != nil {
			return cu, err
		}
		if n == 0 {
			return cu, sysops.Errorf(sysops.ENotFound, "customer %q not found", id)
		}
		return cu, sysops.Errorf(sysops.EConflict, "customer %q has no open tickets to decrement", id)
	}
	if err != nil {
		return cu, err
	}
	return cu, counted(ctx, tx, id, delta, cu.OpenTickets)
}

// counted records a change of a customer's open-ticket count: its event
// and its audit record.
func counted(ctx context.Context, tx *sql.Tx, id string, delta, openTickets int) error {
	ev := map[string]any{"customer_id": id, "delta": delta, "open_tickets": openTickets}
	if err := svc.Emit(ctx, tx, Name, "sysops.customer.open_tickets_changed.v1", "customer", id, ev); err != nil {
		return err
	}
	return svc.Audit(ctx, tx, Name, "customer.open_tickets_changed", "customer", id, ev)
}

// Handler returns the service's HTTP API.
func (s *Service) Handler() http.Handler {
	rt := svc.NewRouter(s.logger)
	rt.Handle("POST /customers", func(w http.ResponseWriter, r *http.Request) error {
		var in NewCustomer
		if err := httpx.DecodeJSON(w, r, &in); err != nil {
			return err
		}
		c, created, err := s.Register(r.Context(), in)
		if err != nil {
			return err
		}
		svc.WriteCreated(w, created, "/customers/"+c.ID, c)
		return nil
	})
	rt.Handle("GET /customers/{id}", svc.Respond(http.StatusOK, func(r *http.Request) (any, error) {
		return s.Get(r.Context(), r.PathValue("id"))
	}))
	rt.Handle("GET /customers", func(w http.ResponseWriter, r *http.Request) error {
		limit, err := httpx.Limit(r.URL.Query(), 100, 1000)
		if err != nil {
			return err
		}
		cs, err := s.List(r.Context(), r.URL.Query().Get("email"), limit)
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"customers": cs})
		return nil
	}, "email", "limit")
	rt.HandleBatch("POST /customers/{id}/open-tickets", s.adjustBatch)
	rt.HandleBatch("POST /customers/{id}/open-tickets/{op_id}/undo", s.undoBatch)
	rt.Handle("POST /customers/{id}/open-tickets", svc.WithBody(http.StatusOK, func(r *http.Request, in struct {
		Delta int    `json:"delta"`
		OpID  string `json:"op_id"`
	}) (any, error) {
		return s.AdjustOpenTickets(r.Context(), r.PathValue("id"), in.Delta, in.OpID)
	}))
	rt.Handle("POST /customers/{id}/open-tickets/{op_id}/undo", svc.Respond(http.StatusOK, func(r *http.Request) (any, error) {
		return s.UndoOpenTickets(r.Context(), r.PathValue("id"), r.PathValue("op_id"))
	}))
	rt.Handle("POST /customers/{id}/support-plan", svc.WithBody(http.StatusOK, func(r *http.Request, in struct {
		Plan string `json:"plan"`
	}) (any, error) {
		return s.SetSupportPlan(r.Context(), r.PathValue("id"), in.Plan)
	}))
	rt.Handle("POST /customers/{id}/close", svc.Respond(http.StatusOK, func(r *http.Request) (any, error) {
		return s.Close(r.Context(), r.PathValue("id"))
	}))
	return rt
}
