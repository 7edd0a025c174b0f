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
//	POST /batch                     several POST /tickets, /tickets/{id}/status and
//	                                /tickets/{id}/cancel calls, each with its own key,
//	                                in one transaction
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
	tk, err := s.prepare(ctx, in, time.Now())
	if err != nil {
		return Ticket{}, false, err
	}
	err = sqldb.RunInScope(ctx, s.db, func(tx *sql.Tx) error {
		var err error
		t, created, err = open(ctx, tx, tk)
		return err
	})
	return t, created, err
}

// prepare checks a new ticket and returns it as it would be stored.
func (s *Service) prepare(ctx context.Context, in NewTicket, now time.Time) (Ticket, error) {
	var c svc.Check
	c.Optional("id", in.ID, 64)
	c.Required("customer_id", in.CustomerID, 64)
	c.Required("description", in.Description, 4000)
	c.OneOf("priority", in.Priority, svc.Priorities...)
	c.OneOf("skill", in.Skill, svc.Skills...)
	c.Zip("zip", in.Zip)
	if err := c.Err(); err != nil {
		return Ticket{}, err
	}
	if _, err := s.zips.Lookup(ctx, in.Zip); err != nil {
		if sysops.CodeOf(err) == sysops.EInvalid {
			return Ticket{}, sysops.Errorf(sysops.EInvalid, "field \"zip\": %s", sysops.MessageOf(err))
		}
		return Ticket{}, err
	}
	now = now.UTC().Truncate(time.Microsecond)
	return Ticket{ID: cmp.Or(in.ID, outbox.NewID()), CustomerID: in.CustomerID, Description: strings.TrimSpace(in.Description),
		Priority: in.Priority, Skill: in.Skill, Zip: in.Zip, Status: "open", CreatedAt: now, UpdatedAt: now}, nil
}

// insertTicket inserts tickets (the VALUES rows) unless they exist or were
// cancelled before they were created; %s is the VALUES list.
const insertTicket = `WITH v (id, customer_id, description, priority, skill, zip, at) AS (VALUES %s)
	INSERT INTO ticket (id, customer_id, description, priority, skill, zip, status, created_at, updated_at)
	SELECT v.id, v.customer_id, v.description, v.priority, v.skill, v.zip, 'open', v.at, v.at FROM v
	WHERE v.id NOT IN (SELECT id FROM ticket_tombstone WHERE id IN (%s))
	ON CONFLICT (id) DO NOTHING RETURNING id`

// ticketRow is a row of insertTicket's VALUES, and ticketArgs its values.
const ticketRow = `(?, ?, ?, ?, ?, ?, CAST(? AS BIGINT))`

func ticketArgs(tk Ticket) []any {
	return []any{tk.ID, tk.CustomerID, tk.Description, tk.Priority, tk.Skill, tk.Zip, svc.Micros(tk.CreatedAt)}
}

// open opens tk in tx: the work of Open.
func open(ctx context.Context, tx *sql.Tx, tk Ticket) (Ticket, bool, error) {
	if err := sqldb.LockKey(ctx, tx, "ticket/"+tk.ID); err != nil {
		return tk, false, err
	}
	// Insert unless it exists or was cancelled before it was created:
	// one statement in the common case; the reads only when it inserted
	// nothing.
	var id string
	values, args := sqldb.Rows(0, ticketRow, 1, func(int) []any { return ticketArgs(tk) })
	err := tx.QueryRowContext(ctx, fmt.Sprintf(insertTicket, values, "$1"), args...).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		tk, err = existing(ctx, tx, tk)
		return tk, false, err
	}
	if err != nil {
		return tk, false, err
	}
	return tk, true, opened(ctx, tx, tk)
}

// existing answers the opening of tk when the insert inserted nothing:
// the ticket as it exists, or why it cannot be opened. It only reads.
func existing(ctx context.Context, tx *sql.Tx, tk Ticket) (Ticket, error) {
	t, err := scan(tx.QueryRowContext(ctx, `SELECT `+columns+` FROM ticket WHERE id = $1`, tk.ID))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return tk, sysops.Errorf(sysops.EConflict, "ticket %q was cancelled before it was created", tk.ID)
	case err != nil:
		return tk, err
	case t.CustomerID != tk.CustomerID:
		return tk, sysops.Errorf(sysops.EConflict, "ticket %q exists for another customer", tk.ID)
	}
	return t, nil
}

// opened records a new ticket: its event and its audit record.
func opened(ctx context.Context, tx *sql.Tx, tk Ticket) error {
	if err := svc.Emit(ctx, tx, Name, "sysops.ticket.opened.v1", "ticket", tk.ID, tk); err != nil {
		return err
	}
	return svc.Audit(ctx, tx, Name, "ticket.opened", "ticket", tk.ID, map[string]string{"customer_id": tk.CustomerID, "priority": tk.Priority})
}

// openBatch opens the tickets of a batch of POST /tickets calls with one
// lock statement and one insert; only tickets that exist already, or
// were cancelled first, are looked at one by one.
func (s *Service) openBatch(ctx context.Context, tx *sql.Tx, items []*idempotency.Item) error {
	now := time.Now()
	type call struct {
		it    *idempotency.Item
		tk    Ticket
		first bool // the batch's first call for the ticket: it goes in the insert
	}
	var calls []call
	var first []Ticket
	var keys []string
	seen := map[string]bool{}
	for _, it := range items {
		var in NewTicket
		if err := httpx.Unmarshal(it.Body, &in); err != nil {
			it.Fail(err)
			continue
		}
		tk, err := s.prepare(ctx, in, now)
		if err != nil {
			it.Fail(err)
			continue
		}
		c := call{it: it, tk: tk, first: !seen[tk.ID]}
		if c.first {
			seen[tk.ID] = true
			first, keys = append(first, tk), append(keys, "ticket/"+tk.ID)
		}
		calls = append(calls, c)
	}
	if len(calls) == 0 {
		return nil
	}
	if err := sqldb.LockKeys(ctx, tx, keys); err != nil {
		return err
	}
	values, args := sqldb.Rows(0, ticketRow, len(first), func(i int) []any { return ticketArgs(first[i]) })
	list, idArgs := sqldb.Rows(len(args), "?", len(first), func(i int) []any { return []any{first[i].ID} })
	inserted, err := svc.Returned(tx.QueryContext(ctx, fmt.Sprintf(insertTicket, values, list), append(args, idArgs...)...))
	if err != nil {
		return err
	}
	for _, c := range calls {
		if c.first && inserted[c.tk.ID] {
			if err := opened(ctx, tx, c.tk); err != nil {
				return err
			}
			c.it.Reply(http.StatusCreated, "/tickets/"+c.tk.ID, c.tk)
			continue
		}
		err := c.it.Answer(func() (int, string, any, error) {
			t, err := existing(ctx, tx, c.tk)
			return http.StatusOK, "/tickets/" + t.ID, t, err
		})
		if err != nil {
			return err
		}
	}
	return nil
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
		t, err = cancel(ctx, tx, id)
		return err
	})
	return t, err
}

// cancel is the work of Cancel in tx, the ticket's key locked. It refuses
// only before it writes.
func cancel(ctx context.Context, tx *sql.Tx, id string) (Ticket, error) {
	t, err := scan(tx.QueryRowContext(ctx, `SELECT `+columns+` FROM ticket WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Ticket{ID: id, Status: "cancelled"}, svc.Tombstone(ctx, tx, "ticket_tombstone", id)
	}
	if err != nil || t.Status == "cancelled" {
		return t, err
	}
	return t, change(ctx, tx, &t, "cancelled", time.Now().UTC().Truncate(time.Microsecond))
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

// SetStatus moves a ticket to status. A move the lifecycle does not
// allow is a conflict, and so is a move to the status the ticket has
// already: each move is made by one request only, so that of two requests
// racing to complete (or cancel) a ticket one wins and the other is
// refused — each would otherwise go on to the steps that follow, as if it
// had made the move. A request repeated with its Idempotency-Key gets its
// first answer.
func (s *Service) SetStatus(ctx context.Context, id, status string) (Ticket, error) {
	if err := checkStatus(status); err != nil {
		return Ticket{}, err
	}
	var t Ticket
	err := sqldb.RunInScope(ctx, s.db, func(tx *sql.Tx) error {
		var err error
		t, err = setStatus(ctx, tx, id, status, time.Now().UTC().Truncate(time.Microsecond))
		return err
	})
	return t, err
}

func checkStatus(status string) error {
	var c svc.Check
	c.OneOf("status", status, "open", "assigned", "completed", "cancelled")
	return c.Err()
}

// statusChange moves the tickets of the ids listed (%s) that are in
// status $2 to status $1, and returns them.
const statusChange = `UPDATE ticket SET status = $1, updated_at = $3 WHERE status = $2 AND id IN (%s) RETURNING ` + columns

// setStatus is the work of SetStatus in tx. It refuses only before it
// writes.
func setStatus(ctx context.Context, tx *sql.Tx, id, status string, now time.Time) (Ticket, error) {
	if from := sourcesOf(status); len(from) == 1 {
		// One status leads here: try the change in one statement.
		t, err := scan(tx.QueryRowContext(ctx, `UPDATE ticket SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4
			RETURNING `+columns, status, svc.Micros(now), id, from[0]))
		if err == nil {
			return t, changed(ctx, tx, t, from[0])
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return t, err
		}
		// Not found, already there, or not allowed: read it to say which.
	}
	t, err := scan(tx.QueryRowContext(ctx, `SELECT `+columns+` FROM ticket WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return t, sysops.Errorf(sysops.ENotFound, "ticket %q not found", id)
	}
	if err != nil {
		return t, err
	}
	return t, change(ctx, tx, &t, status, now)
}

// statusBatch applies a batch of POST /tickets/{id}/status calls: for a
// status that one status leads to, one statement moves every ticket of
// the batch that can move; the rest are looked at one by one, as alone.
func (s *Service) statusBatch(ctx context.Context, tx *sql.Tx, items []*idempotency.Item) error {
	now := time.Now().UTC().Truncate(time.Microsecond)
	type call struct {
		it     *idempotency.Item
		id, to string
	}
	var calls []call
	byStatus := map[string][]string{} // target status -> ids
	for _, it := range items {
		var in struct {
			Status string `json:"status"`
		}
		if err := httpx.Unmarshal(it.Body, &in); err != nil {
			it.Fail(err)
			continue
		}
		if err := checkStatus(in.Status); err != nil {
			it.Fail(err)
			continue
		}
		c := call{it, it.Request.PathValue("id"), in.Status}
		calls = append(calls, c)
		if len(sourcesOf(c.to)) == 1 && !slices.Contains(byStatus[c.to], c.id) {
			byStatus[c.to] = append(byStatus[c.to], c.id)
		}
	}
	type move struct{ id, to string }
	moved := map[move]Ticket{} // the tickets as each statement moved them
	for _, to := range slices.Sorted(maps.Keys(byStatus)) {
		ids := slices.Sorted(slices.Values(byStatus[to])) // row locks in id order
		ts, err := moveAll(ctx, tx, ids, sourcesOf(to)[0], to, now)
		if err != nil {
			return err
		}
		for _, t := range ts {
			moved[move{t.ID, to}] = t
		}
	}
	for _, c := range calls {
		if t, ok := moved[move{c.id, c.to}]; ok {
			delete(moved, move{c.id, c.to}) // another call of the batch for it finds it moved: refused
			c.it.Reply(http.StatusOK, "", t)
			continue
		}
		err := c.it.Answer(func() (int, string, any, error) {
			t, err := setStatus(ctx, tx, c.id, c.to, now)
			return http.StatusOK, "", t, err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// cancelBatch cancels a batch's tickets under their keys' locks (taken in
// one statement, in key order, as open takes them): one statement per
// status a ticket is cancelled from, and one insert of the tombstones of
// tickets that do not exist (a cancel that came before its open). The
// rest — already cancelled, or past cancelling — are answered one by one,
// as alone.
func (s *Service) cancelBatch(ctx context.Context, tx *sql.Tx, items []*idempotency.Item) error {
	id := func(it *idempotency.Item) string { return it.Request.PathValue("id") }
	items, ids, err := idempotency.InKeyOrder(ctx, tx, items, id, "ticket/")
	if err != nil {
		return err
	}
	exists, err := svc.TombstoneAbsent(ctx, tx, "ticket", "id", ids, "ticket_tombstone")
	if err != nil {
		return err
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	moved := map[string]Ticket{}
	for _, from := range slices.Sorted(slices.Values(sourcesOf("cancelled"))) {
		ts, err := moveAll(ctx, tx, ids, from, "cancelled", now)
		if err != nil {
			return err
		}
		for _, t := range ts {
			moved[t.ID] = t
		}
	}
	for _, it := range items {
		if !exists[id(it)] {
			it.Reply(http.StatusOK, "", Ticket{ID: id(it), Status: "cancelled"})
			continue
		}
		if t, ok := moved[id(it)]; ok {
			delete(moved, id(it)) // a repeat finds it cancelled
			it.Reply(http.StatusOK, "", t)
			continue
		}
		if err := it.Answer(func() (int, string, any, error) {
			t, err := cancel(ctx, tx, id(it))
			return http.StatusOK, "", t, err
		}); err != nil {
			return err
		}
	}
	return nil
}

// moveAll moves the tickets of ids (sorted: row locks in id order) that
// are in status from to status to, in one statement, records each change,
// and returns the tickets it moved, as moved.
func moveAll(ctx context.Context, tx *sql.Tx, ids []string, from, to string, now time.Time) ([]Ticket, error) {
	list, idArgs := sqldb.Rows(3, "?", len(ids), func(i int) []any { return []any{ids[i]} })
	rows, err := tx.QueryContext(ctx, fmt.Sprintf(statusChange, list), append([]any{to, from, svc.Micros(now)}, idArgs...)...)
	ts, err := svc.Collect(rows, err, scan)
	if err != nil {
		return nil, err
	}
	for _, t := range ts {
		if err := changed(ctx, tx, t, from); err != nil {
			return nil, err
		}
	}
	return ts, nil
}

// change moves ticket t, as just read, to status and records the change,
// refusing a transition the ticket's life does not allow, and a move to
// the status it has (another request made it).
func change(ctx context.Context, tx *sql.Tx, t *Ticket, status string, now time.Time) error {
	if t.Status == status {
		return sysops.Errorf(sysops.EConflict, "ticket %q is already %s", t.ID, status)
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
		limit, err := httpx.Limit(r.URL.Query(), 100, 1000)
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
	}, "customer_id", "status", "limit")
	rt.HandleBatch("POST /tickets", s.openBatch)
	rt.HandleBatch("POST /tickets/{id}/status", s.statusBatch)
	rt.HandleBatch("POST /tickets/{id}/cancel", s.cancelBatch)
	rt.Handle("POST /tickets/{id}/status", svc.WithBody(http.StatusOK, func(r *http.Request, in struct {
		Status string `json:"status"`
	}) (any, error) {
		return s.SetStatus(r.Context(), r.PathValue("id"), in.Status)
	}))
	return rt
}
