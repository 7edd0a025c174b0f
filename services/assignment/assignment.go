// Package assignment is the Assignment service: the owner of expert (the
// Sysops experts: skills, zip, capacity) and ticket_assignment (which
// expert a ticket is assigned to, when it is scheduled, and the completion
// notes) — the expert-facing half of the old shared ticket table, split
// from ticket and linked by the ticket id. It picks the nearest expert
// with the skill and spare capacity, measuring distance on its own
// replicated copy of location's zip codes.
//
//	POST /experts                         add an expert
//	GET  /experts, /experts/{id}          experts with their open assignments
//	POST /assignments                     {"ticket_id", "skill", "zip", "priority"}: assign
//	GET  /assignments/{ticket_id}         a ticket's assignment, with its expert
//	GET  /assignments?expert_id=E
//	POST /assignments/{ticket_id}/complete  {"notes": "..."}
//	POST /assignments/{ticket_id}/release   give the ticket back (frees capacity)
//	POST /batch                           several assign and release calls, each with its
//	                                      own key, in one transaction
//
// Every change publishes an event (sysops.assignment.*) and an audit
// record through the service's outbox.
package assignment

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
	"sync"
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
const Name = "assignment"

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

// Expert is one row of the expert table.
type Expert struct {
	ID              string    `json:"id"`
	Name            string    `json:"name"`
	Email           string    `json:"email"`
	Skills          []string  `json:"skills"`
	Zip             string    `json:"zip"`
	Capacity        int       `json:"capacity"`
	OpenAssignments int       `json:"open_assignments"`
	CreatedAt       time.Time `json:"created_at"`
}

// NewExpert is the body of a new expert.
type NewExpert struct {
	Name     string   `json:"name"`
	Email    string   `json:"email"`
	Skills   []string `json:"skills"`
	Zip      string   `json:"zip"`
	Capacity int      `json:"capacity"`
}

// Assignment is one row of ticket_assignment, with its expert.
type Assignment struct {
	TicketID        string     `json:"ticket_id"`
	ExpertID        string     `json:"expert_id"`
	Status          string     `json:"status"`
	ScheduledFor    time.Time  `json:"scheduled_for"`
	CompletionNotes string     `json:"completion_notes,omitempty"`
	AssignedAt      time.Time  `json:"assigned_at"`
	CompletedAt     *time.Time `json:"completed_at,omitempty"`
	Expert          *Expert    `json:"expert,omitempty"`
}

// Request asks for a ticket to be assigned.
type Request struct {
	TicketID string `json:"ticket_id"`
	Skill    string `json:"skill"`
	Zip      string `json:"zip"`
	Priority string `json:"priority"`
}

// leadTime is how soon a visit is scheduled, by priority.
var leadTime = map[string]time.Duration{"critical": 2 * time.Hour, "high": 8 * time.Hour, "medium": 24 * time.Hour, "low": 72 * time.Hour}

// Service is the Assignment service.
type Service struct {
	db     *sqldb.DB
	zips   *svc.ZipReplica
	logger *slog.Logger

	mu         sync.Mutex
	skillZips  map[string]skillZips // by skill; see zipsWithSkill
	skillEpoch int                  // bumped by every expert this instance adds
}

// skillZips is a read of the zips where experts with a skill live.
type skillZips struct {
	zips  []string
	read  time.Time
	epoch int
}

// skillZipsTTL is how long a read of the zips where experts with a skill
// live answers assignments. An expert added through this instance is seen
// at once; one added through another instance within this time.
const skillZipsTTL = 5 * time.Second

// New returns the service over its database and zip code copy.
func New(db *sqldb.DB, zips *svc.ZipReplica, logger *slog.Logger) *Service {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Service{db: db, zips: zips, logger: logger, skillZips: map[string]skillZips{}}
}

// zipsWithSkill returns the zips where experts with skill live, full or
// not, from a read at most skillZipsTTL old. Experts are few per zip
// compared with the tickets they take, and an area whose experts are all
// full costs one indexed statement to pass over; so this saves reading
// every expert with the skill at every assignment.
func (s *Service) zipsWithSkill(ctx context.Context, skill string) ([]string, error) {
	s.mu.Lock()
	c, ok := s.skillZips[skill]
	epoch := s.skillEpoch
	s.mu.Unlock()
	if ok && c.epoch == epoch && time.Since(c.read) < skillZipsTTL {
		return c.zips, nil
	}
	read := time.Now()
	rows, err := s.db.QueryContext(ctx, `SELECT DISTINCT zip FROM expert WHERE (',' || skills || ',') LIKE $1`, "%,"+skill+",%")
	zips, err := svc.Collect(rows, err, func(r svc.Scanner) (string, error) {
		var z string
		return z, r.Scan(&z)
	})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.skillZips[skill] = skillZips{zips: zips, read: read, epoch: epoch}
	s.mu.Unlock()
	return zips, nil
}

// expertAdded makes the next assignment read the zips again.
func (s *Service) expertAdded() {
	s.mu.Lock()
	s.skillEpoch++
	s.mu.Unlock()
}

// AddExpert adds an expert.
func (s *Service) AddExpert(ctx context.Context, in NewExpert) (Expert, error) {
	in.Email = strings.ToLower(strings.TrimSpace(in.Email))
	var c svc.Check
	c.Required("name", in.Name, 200)
	c.Email("email", in.Email)
	c.Zip("zip", in.Zip)
	c.Range("capacity", in.Capacity, 1, 100)
	if len(in.Skills) == 0 {
		c.Fail("field %q needs at least one skill", "skills")
	}
	for _, sk := range in.Skills {
		c.OneOf("skills", sk, svc.Skills...)
	}
	if err := c.Err(); err != nil {
		return Expert{}, err
	}
	if _, err := s.zips.Lookup(ctx, in.Zip); err != nil {
		if sysops.CodeOf(err) == sysops.EInvalid {
			return Expert{}, sysops.Errorf(sysops.EInvalid, "field \"zip\": %s", sysops.MessageOf(err))
		}
		return Expert{}, err
	}
	skills := slices.Compact(slices.Sorted(slices.Values(in.Skills)))
	now := time.Now().UTC().Truncate(time.Microsecond)
	e := Expert{ID: outbox.NewID(), Name: strings.TrimSpace(in.Name), Email: in.Email, Skills: skills, Zip: in.Zip,
		Capacity: in.Capacity, CreatedAt: now}
	err := sqldb.RunInScope(ctx, s.db, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO expert (id, name, email, skills, zip, capacity, open_assignments, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, 0, $7)`, e.ID, e.Name, e.Email, strings.Join(skills, ","), e.Zip, e.Capacity,
			svc.Micros(now)); err != nil {
			if sqldb.IsUniqueViolation(err) {
				return sysops.Errorf(sysops.EConflict, "an expert with email %q exists", e.Email)
			}
			return err
		}
		if err := svc.Emit(ctx, tx, Name, "sysops.assignment.expert_added.v1", "expert", e.ID, e); err != nil {
			return err
		}
		if !sqldb.AfterCommit(tx, func(*sqldb.DB) { s.expertAdded() }) {
			defer s.expertAdded()
		}
		return svc.Audit(ctx, tx, Name, "expert.added", "expert", e.ID, map[string]any{"skills": skills, "zip": e.Zip})
	})
	return e, err
}

const expertColumns = `id, name, email, skills, zip, capacity, open_assignments, created_at`

func scanExpert(row svc.Scanner) (Expert, error) {
	var e Expert
	var skills string
	var created int64
	err := row.Scan(&e.ID, &e.Name, &e.Email, &skills, &e.Zip, &e.Capacity, &e.OpenAssignments, &created)
	e.Skills = strings.Split(skills, ",")
	e.CreatedAt = svc.FromMicros(created)
	return e, err
}

// Expert returns one expert.
func (s *Service) Expert(ctx context.Context, id string) (Expert, error) {
	e, err := scanExpert(s.db.QueryRowContext(ctx, `SELECT `+expertColumns+` FROM expert WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return e, sysops.Errorf(sysops.ENotFound, "expert %q not found", id)
	}
	return e, err
}

// Experts returns every expert, by name.
func (s *Service) Experts(ctx context.Context) ([]Expert, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+expertColumns+` FROM expert ORDER BY name, id`)
	return svc.Collect(rows, err, scanExpert)
}

// Assign gives a ticket to the nearest expert who has the skill and spare
// capacity; among equally near experts, to the least loaded one, passing
// over those a concurrent assignment is taking (see takeExpert). A ticket
// already assigned keeps its assignment (a repeat is safe); no expert
// available is a conflict.
func (s *Service) Assign(ctx context.Context, in Request) (Assignment, error) {
	p, err := s.plan(ctx, in)
	if err != nil {
		return Assignment{}, err
	}
	var out Assignment
	err = sqldb.RunInScope(ctx, s.db, func(tx *sql.Tx) error {
		if err := sqldb.LockKey(ctx, tx, "assignment/"+p.in.TicketID); err != nil {
			return err
		}
		// Released before it was assigned, or assigned already? One read
		// answers both; the whole assignment is read only for a repeat.
		var tombstones int
		var status sql.NullString
		if err := tx.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM assignment_tombstone WHERE id = $1), ta.status
			FROM (SELECT 1 AS one) x LEFT JOIN ticket_assignment ta ON ta.ticket_id = $1`, p.in.TicketID).Scan(&tombstones, &status); err != nil {
			return err
		}
		a, fresh, err := s.take(ctx, tx, p, tombstones > 0, status, time.Now())
		if err != nil || !fresh {
			out = a
			return err
		}
		values, args := sqldb.Rows(0, assignmentRow, 1, func(int) []any {
			return []any{a.TicketID, a.ExpertID, svc.Micros(a.ScheduledFor), svc.Micros(a.AssignedAt)}
		})
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(insertAssignments, values), args...); err != nil {
			return err
		}
		out = a
		return assigned(ctx, tx, a)
	})
	return out, err
}

// assignmentRow is a row of insertAssignments: ticket, expert, when
// scheduled, when assigned.
const assignmentRow = `(?, ?, CAST(? AS BIGINT), CAST(? AS BIGINT))`

// insertAssignments stores new assignments (the VALUES rows, %s); a
// released one is given again.
const insertAssignments = `WITH v (ticket_id, expert_id, scheduled_for, assigned_at) AS (VALUES %s)
	INSERT INTO ticket_assignment (ticket_id, expert_id, status, scheduled_for, assigned_at)
	SELECT ticket_id, expert_id, 'assigned', scheduled_for, assigned_at FROM v WHERE true
	ON CONFLICT (ticket_id) DO UPDATE SET expert_id = excluded.expert_id, status = 'assigned',
		scheduled_for = excluded.scheduled_for, assigned_at = excluded.assigned_at, completion_notes = '', completed_at = NULL`

// plan is an assignment request, checked, with the zips to look in:
// groups of equally near zips, nearest first.
type plan struct {
	in    Request
	skill string // LIKE pattern over the expert's skills
	areas [][]string
}

// plan checks a request and works out where to look.
func (s *Service) plan(ctx context.Context, in Request) (plan, error) {
	if in.Priority == "" {
		in.Priority = "medium"
	}
	var c svc.Check
	c.Required("ticket_id", in.TicketID, 64)
	c.OneOf("skill", in.Skill, svc.Skills...)
	c.Zip("zip", in.Zip)
	c.OneOf("priority", in.Priority, svc.Priorities...)
	if err := c.Err(); err != nil {
		return plan{}, err
	}
	origin, err := s.zips.Lookup(ctx, in.Zip)
	if err != nil {
		return plan{}, err
	}
	all, err := s.zips.All(ctx)
	if err != nil {
		return plan{}, err
	}
	withSkill, err := s.zipsWithSkill(ctx, in.Skill)
	if err != nil {
		return plan{}, err
	}
	areas := make([]area, len(withSkill))
	for i, z := range withSkill {
		areas[i] = area{zip: z, km: svc.KM(origin, all[z])}
	}
	slices.SortFunc(areas, func(a, b area) int { return cmp.Or(cmp.Compare(a.km, b.km), cmp.Compare(a.zip, b.zip)) })
	p := plan{in: in, skill: "%," + in.Skill + ",%"}
	for start := 0; start < len(areas); {
		end := start + 1
		for end < len(areas) && areas[end].km == areas[start].km {
			end++
		}
		zips := make([]string, 0, end-start)
		for _, a := range areas[start:end] {
			zips = append(zips, a.zip)
		}
		p.areas = append(p.areas, zips)
		start = end
	}
	return p, nil
}

// take decides a planned assignment, given whether the ticket was
// released before it was assigned and the status of its assignment, if
// any: the assignment it has (fresh false), or a new one with the expert
// whose capacity it took (fresh true; the caller stores it). It refuses
// only before it writes anything.
func (s *Service) take(ctx context.Context, tx *sql.Tx, p plan, tombstoned bool, status sql.NullString, now time.Time) (a Assignment, fresh bool, err error) {
	id := p.in.TicketID
	switch {
	case tombstoned:
		return a, false, sysops.Errorf(sysops.EConflict, "ticket %q was released before it was assigned", id)
	case status.String == "completed":
		return a, false, sysops.Errorf(sysops.EConflict, "ticket %q was completed already", id)
	case status.Valid && status.String != "released":
		a, err = s.assignment(ctx, tx, id)
		return a, false, err
	}
	now = now.UTC().Truncate(time.Microsecond)
	for _, zips := range p.areas {
		e, ok, err := s.takeExpert(ctx, tx, p.skill, zips)
		if err != nil {
			return a, false, err
		}
		if !ok {
			continue // all of them are full
		}
		sched := now.Add(leadTime[p.in.Priority])
		return Assignment{TicketID: id, ExpertID: e.ID, Status: "assigned", ScheduledFor: sched, AssignedAt: now, Expert: &e}, true, nil
	}
	return a, false, sysops.Errorf(sysops.EConflict, "no expert with skill %q has spare capacity", p.in.Skill)
}

// assigned records a new assignment: its event and its audit record.
func assigned(ctx context.Context, tx *sql.Tx, a Assignment) error {
	ev := map[string]any{"ticket_id": a.TicketID, "expert_id": a.ExpertID, "scheduled_for": a.ScheduledFor}
	if err := svc.Emit(ctx, tx, Name, "sysops.assignment.assigned.v1", "ticket_assignment", a.TicketID, ev); err != nil {
		return err
	}
	return svc.Audit(ctx, tx, Name, "ticket.assigned", "ticket_assignment", a.TicketID, ev)
}

// assignBatch applies a batch of POST /assignments calls: one lock
// statement and one read for all the tickets, each expert taken as alone
// (one statement, two if every candidate is held), and one insert for
// all the new assignments. A ticket asked for twice gets one assignment.
func (s *Service) assignBatch(ctx context.Context, tx *sql.Tx, items []*idempotency.Item) error {
	type call struct {
		it    *idempotency.Item
		p     plan
		first int // the call of the batch for the same ticket that came first, or itself
	}
	var calls []*call
	firstOf := map[string]int{}
	for _, it := range items {
		var in Request
		if err := httpx.Unmarshal(it.Body, &in); err != nil {
			it.Fail(err)
			continue
		}
		p, err := s.plan(ctx, in)
		if err != nil {
			it.Fail(err)
			continue
		}
		c := &call{it: it, p: p, first: len(calls)}
		if f, ok := firstOf[p.in.TicketID]; ok {
			c.first = f
		} else {
			firstOf[p.in.TicketID] = len(calls)
		}
		calls = append(calls, c)
	}
	if len(calls) == 0 {
		return nil
	}
	ids := slices.Sorted(maps.Keys(firstOf))
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = "assignment/" + id
	}
	list, args := sqldb.Rows(0, "?", len(ids), func(i int) []any { return []any{ids[i]} })
	if err := sqldb.LockKeys(ctx, tx, keys); err != nil {
		return err
	}
	type state struct {
		tombstoned bool
		status     sql.NullString
	}
	states := map[string]state{}
	// Both tables looked up by key (an IN list), never joined to the
	// batch's rows: a join can be planned as a scan of a whole table
	// (fresh tables have no statistics), which grows with the table.
	rows, err := tx.QueryContext(ctx, `SELECT ticket_id, status FROM ticket_assignment WHERE ticket_id IN (`+list+`)
		UNION ALL SELECT id, NULL FROM assignment_tombstone WHERE id IN (`+list+`)`, args...)
	if _, err := svc.Collect(rows, err, func(r svc.Scanner) (string, error) {
		var id string
		var status sql.NullString
		err := r.Scan(&id, &status)
		st := states[id]
		if status.Valid {
			st.status = status
		} else {
			st.tombstoned = true
		}
		states[id] = st
		return id, err
	}); err != nil {
		return err
	}
	now := time.Now()
	answers := make([]Assignment, len(calls))
	refusals := make([]error, len(calls))
	var fresh []Assignment
	for i, c := range calls {
		if c.first != i {
			continue
		}
		st := states[c.p.in.TicketID]
		a, isNew, err := s.take(ctx, tx, c.p, st.tombstoned, st.status, now)
		if err != nil {
			if sysops.CodeOf(err) == sysops.EInternal {
				return err
			}
			refusals[i] = err // nothing written
			continue
		}
		answers[i] = a
		if isNew {
			fresh = append(fresh, a)
		}
	}
	if len(fresh) > 0 {
		values, args := sqldb.Rows(0, assignmentRow, len(fresh), func(i int) []any {
			a := fresh[i]
			return []any{a.TicketID, a.ExpertID, svc.Micros(a.ScheduledFor), svc.Micros(a.AssignedAt)}
		})
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(insertAssignments, values), args...); err != nil {
			return err
		}
		for _, a := range fresh {
			if err := assigned(ctx, tx, a); err != nil {
				return err
			}
		}
	}
	for _, c := range calls {
		if err := refusals[c.first]; err != nil {
			c.it.Fail(err)
			continue
		}
		c.it.Reply(http.StatusCreated, "", answers[c.first])
	}
	return nil
}

// area is a zip where experts with the skill have spare capacity, and
// its distance from the ticket.
type area struct {
	zip string
	km  float64
}

// takeExpert takes one unit of capacity from the least loaded expert with
// the skill in one of equally near zips, and returns that expert as
// updated (ok false if all of them are full). On PostgreSQL it first
// passes over the experts that a concurrent assignment holds (SKIP
// LOCKED), so that a burst of tickets from one area spreads over the
// experts there instead of queueing on one expert's row until each
// transaction before it has committed; only if every one is held does it
// wait for them. SQLite runs one write transaction at a time, so nothing
// is held there. Either way it is one statement, however many experts
// the area has.
func (s *Service) takeExpert(ctx context.Context, tx *sql.Tx, skill string, zips []string) (Expert, bool, error) {
	args := []any{skill}
	marks := make([]string, len(zips))
	for i, z := range zips {
		args = append(args, z)
		marks[i] = fmt.Sprintf("$%d", i+2)
	}
	pick := `SELECT id FROM expert WHERE zip IN (` + strings.Join(marks, ", ") + `) AND open_assignments < capacity
		AND (',' || skills || ',') LIKE $1 ORDER BY open_assignments, id LIMIT 1`
	locks := []string{""}
	if s.db.Dialect() == sqldb.Postgres {
		locks = []string{" FOR UPDATE SKIP LOCKED", " FOR UPDATE"}
	}
	for _, lock := range locks {
		e, err := scanExpert(tx.QueryRowContext(ctx, `UPDATE expert SET open_assignments = open_assignments + 1
			WHERE id = (`+pick+lock+`) AND open_assignments < capacity RETURNING `+expertColumns, args...))
		if err == nil {
			return e, true, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return Expert{}, false, err
		}
	}
	return Expert{}, false, nil
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (s *Service) assignment(ctx context.Context, q querier, ticketID string) (Assignment, error) {
	var a Assignment
	var sched, assigned int64
	var completed sql.NullInt64
	err := q.QueryRowContext(ctx, `SELECT ticket_id, expert_id, status, scheduled_for, completion_notes, assigned_at, completed_at
		FROM ticket_assignment WHERE ticket_id = $1`, ticketID).Scan(&a.TicketID, &a.ExpertID, &a.Status, &sched,
		&a.CompletionNotes, &assigned, &completed)
	if errors.Is(err, sql.ErrNoRows) {
		return a, sysops.Errorf(sysops.ENotFound, "ticket %q has no assignment", ticketID)
	}
	if err != nil {
		return a, err
	}
	a.ScheduledFor, a.AssignedAt = svc.FromMicros(sched), svc.FromMicros(assigned)
	if completed.Valid {
		t := svc.FromMicros(completed.Int64)
		a.CompletedAt = &t
	}
	e, err := scanExpert(q.QueryRowContext(ctx, `SELECT `+expertColumns+` FROM expert WHERE id = $1`, a.ExpertID))
	if err != nil {
		return a, err
	}
	a.Expert = &e
	return a, nil
}

// Assignment returns a ticket's assignment with its expert.
func (s *Service) Assignment(ctx context.Context, ticketID string) (Assignment, error) {
	return s.assignment(ctx, s.db, ticketID)
}

// ForExpert returns an expert's assignments, newest first.
func (s *Service) ForExpert(ctx context.Context, expertID string) ([]Assignment, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT ticket_id FROM ticket_assignment WHERE expert_id = $1 ORDER BY assigned_at DESC`, expertID)
	if err != nil {
		return nil, err
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	out := []Assignment{}
	for _, id := range ids {
		a, err := s.Assignment(ctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// Complete records the completion notes of an assigned ticket and frees
// the expert's capacity. Completing it again with the same notes is a
// no-op.
func (s *Service) Complete(ctx context.Context, ticketID, notes string) (Assignment, error) {
	var c svc.Check
	c.Required("notes", notes, 4000)
	if err := c.Err(); err != nil {
		return Assignment{}, err
	}
	return s.finish(ctx, ticketID, "completed", notes)
}

// Release gives a ticket back: its assignment is released and the
// expert's capacity freed. Releasing a released ticket is a no-op; a ticket
// not assigned yet is tombstoned, so that assigning it later is refused (a
// saga's compensation may overtake its action).
func (s *Service) Release(ctx context.Context, ticketID string) (Assignment, error) {
	var out Assignment
	err := sqldb.RunInScope(ctx, s.db, func(tx *sql.Tx) error {
		if err := sqldb.LockKey(ctx, tx, "assignment/"+ticketID); err != nil {
			return err
		}
		var err error
		out, err = s.release(ctx, tx, ticketID)
		return err
	})
	return out, err
}

// release is the work of Release in tx, the ticket's key locked. It
// refuses only before it writes.
func (s *Service) release(ctx context.Context, tx *sql.Tx, ticketID string) (Assignment, error) {
	_, err := s.assignment(ctx, tx, ticketID)
	if sysops.CodeOf(err) == sysops.ENotFound {
		return Assignment{TicketID: ticketID, Status: "released"}, svc.Tombstone(ctx, tx, "assignment_tombstone", ticketID)
	}
	if err != nil {
		return Assignment{}, err
	}
	return s.finishIn(ctx, tx, ticketID, "released", "")
}

// releaseBatch releases a batch's assignments under their tickets' keys
// (one statement, in key order, as assign takes them): one read finds
// which tickets have an assignment, and one insert records the
// tombstones of those that have none (a release that came before its
// assign, or after a refused one); the assignments there are released one
// by one, as alone.
func (s *Service) releaseBatch(ctx context.Context, tx *sql.Tx, items []*idempotency.Item) error {
	id := func(it *idempotency.Item) string { return it.Request.PathValue("ticket_id") }
	items, ids, err := idempotency.InKeyOrder(ctx, tx, items, id, "assignment/")
	if err != nil {
		return err
	}
	assigned, err := svc.TombstoneAbsent(ctx, tx, "ticket_assignment", "ticket_id", ids, "assignment_tombstone")
	if err != nil {
		return err
	}
	for _, it := range items {
		if !assigned[id(it)] {
			it.Reply(http.StatusOK, "", Assignment{TicketID: id(it), Status: "released"})
			continue
		}
		if err := it.Answer(func() (int, string, any, error) {
			a, err := s.finishIn(ctx, tx, id(it), "released", "")
			return http.StatusOK, "", a, err
		}); err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) finish(ctx context.Context, ticketID, status, notes string) (Assignment, error) {
	var out Assignment
	err := sqldb.RunInScope(ctx, s.db, func(tx *sql.Tx) error {
		var err error
		out, err = s.finishIn(ctx, tx, ticketID, status, notes)
		return err
	})
	return out, err
}

// finishIn moves an assignment to status in tx, freeing its expert. It
// refuses only before it writes.
func (s *Service) finishIn(ctx context.Context, tx *sql.Tx, ticketID, status, notes string) (Assignment, error) {
	a, err := s.assignment(ctx, tx, ticketID)
	if err != nil {
		return a, err
	}
	if a.Status == status && a.CompletionNotes == notes {
		return a, nil
	}
	if a.Status != "assigned" {
		return a, sysops.Errorf(sysops.EConflict, "assignment of ticket %q is %s, not assigned", ticketID, a.Status)
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	var completed any
	if status == "completed" {
		completed = svc.Micros(now)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE ticket_assignment SET status = $1, completion_notes = $2, completed_at = $3
		WHERE ticket_id = $4`, status, notes, completed, ticketID); err != nil {
		return a, err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE expert SET open_assignments = open_assignments - 1 WHERE id = $1`, a.ExpertID); err != nil {
		return a, err
	}
	out, err := s.assignment(ctx, tx, ticketID)
	if err != nil {
		return out, err
	}
	ev := map[string]any{"ticket_id": ticketID, "expert_id": a.ExpertID}
	if err := svc.Emit(ctx, tx, Name, "sysops.assignment."+status+".v1", "ticket_assignment", ticketID, ev); err != nil {
		return out, err
	}
	return out, svc.Audit(ctx, tx, Name, "ticket_assignment."+status, "ticket_assignment", ticketID, ev)
}

// Handler returns the service's HTTP API.
func (s *Service) Handler() http.Handler {
	rt := svc.NewRouter(s.logger)
	rt.Handle("POST /experts", func(w http.ResponseWriter, r *http.Request) error {
		var in NewExpert
		if err := httpx.DecodeJSON(w, r, &in); err != nil {
			return err
		}
		e, err := s.AddExpert(r.Context(), in)
		if err != nil {
			return err
		}
		w.Header().Set("Location", "/experts/"+e.ID)
		httpx.WriteJSON(w, http.StatusCreated, e)
		return nil
	})
	rt.Handle("GET /experts", func(w http.ResponseWriter, r *http.Request) error {
		es, err := s.Experts(r.Context())
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"experts": es})
		return nil
	})
	rt.Handle("GET /experts/{id}", svc.Respond(http.StatusOK, func(r *http.Request) (any, error) {
		return s.Expert(r.Context(), r.PathValue("id"))
	}))
	rt.HandleBatch("POST /assignments", s.assignBatch)
	rt.HandleBatch("POST /assignments/{ticket_id}/release", s.releaseBatch)
	rt.Handle("POST /assignments", svc.WithBody(http.StatusCreated, func(r *http.Request, in Request) (any, error) {
		return s.Assign(r.Context(), in)
	}))
	rt.Handle("GET /assignments/{ticket_id}", svc.Respond(http.StatusOK, func(r *http.Request) (any, error) {
		return s.Assignment(r.Context(), r.PathValue("ticket_id"))
	}))
	rt.Handle("GET /assignments", func(w http.ResponseWriter, r *http.Request) error {
		id := r.URL.Query().Get("expert_id")
		if id == "" {
			return sysops.Errorf(sysops.EInvalid, "query parameter expert_id is required")
		}
		as, err := s.ForExpert(r.Context(), id)
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"assignments": as})
		return nil
	}, "expert_id")
	rt.Handle("POST /assignments/{ticket_id}/complete", svc.WithBody(http.StatusOK, func(r *http.Request, in struct {
		Notes string `json:"notes"`
	}) (any, error) {
		return s.Complete(r.Context(), r.PathValue("ticket_id"), in.Notes)
	}))
	rt.Handle("POST /assignments/{ticket_id}/release", svc.Respond(http.StatusOK, func(r *http.Request) (any, error) {
		return s.Release(r.Context(), r.PathValue("ticket_id"))
	}))
	return rt
}
