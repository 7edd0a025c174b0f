package saga

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/sqldb"
)

// Saga is one saga as its log records it.
type Saga struct {
	ID           string          `json:"id"`
	Definition   string          `json:"definition"`
	Version      int             `json:"version"`
	Input        json.RawMessage `json:"input,omitempty"`
	State        State           `json:"state"`
	Reason       string          `json:"reason,omitempty"`
	LastError    string          `json:"last_error,omitempty"`
	CancelReason string          `json:"cancel_reason,omitempty"`
	DeadlineAt   time.Time       `json:"deadline_at,omitzero"`
	CreatedAt    time.Time       `json:"created_at"`
	UpdatedAt    time.Time       `json:"updated_at"`
	FinishedAt   *time.Time      `json:"finished_at,omitempty"`
	LeaseOwner   string          `json:"lease_owner,omitempty"`
	Steps        []StepRecord    `json:"steps,omitempty"`
}

// StepRecord is one step of a saga as its log records it.
type StepRecord struct {
	Index                int             `json:"index"`
	Name                 string          `json:"name"`
	Status               StepStatus      `json:"status"`
	Attempts             int             `json:"attempts"`
	CompensationAttempts int             `json:"compensation_attempts"`
	Output               json.RawMessage `json:"output,omitempty"`
	LastError            string          `json:"last_error,omitempty"`
	UpdatedAt            time.Time       `json:"updated_at"`
}

func us(t time.Time) int64     { return t.UnixMicro() }
func fromUS(v int64) time.Time { return time.UnixMicro(v).UTC() }
func rawOrNil(s string) json.RawMessage {
	if s == "" {
		return nil
	}
	return json.RawMessage(s)
}

// stepRow is a step as the saga row's steps column stores it: a JSON
// array of these, in step order. The output is kept as a string, so
// whatever a participant returned round-trips as it was.
type stepRow struct {
	Index        int        `json:"index"`
	Name         string     `json:"name"`
	Status       StepStatus `json:"status"`
	Attempts     int        `json:"attempts"`
	CompAttempts int        `json:"comp_attempts"`
	Output       string     `json:"output,omitempty"`
	LastError    string     `json:"last_error,omitempty"`
	UpdatedAt    int64      `json:"updated_at"`
}

// encodeSteps is the steps column of a saga with these steps.
func encodeSteps(steps []StepRecord) (string, error) {
	rows := make([]stepRow, len(steps))
	for i, r := range steps {
		rows[i] = stepRow{Index: r.Index, Name: r.Name, Status: r.Status, Attempts: r.Attempts, CompAttempts: r.CompensationAttempts,
			Output: string(r.Output), LastError: r.LastError, UpdatedAt: us(r.UpdatedAt)}
	}
	b, err := json.Marshal(rows)
	return string(b), err
}

// decodeSteps reads a steps column.
func decodeSteps(col string) ([]StepRecord, error) {
	var rows []stepRow
	if err := json.Unmarshal([]byte(col), &rows); err != nil {
		return nil, fmt.Errorf("steps column: %w", err)
	}
	var steps []StepRecord
	for _, r := range rows {
		steps = append(steps, StepRecord{Index: r.Index, Name: r.Name, Status: r.Status, Attempts: r.Attempts,
			CompensationAttempts: r.CompAttempts, Output: rawOrNil(r.Output), LastError: r.LastError, UpdatedAt: fromUS(r.UpdatedAt)})
	}
	return steps, nil
}

// Get reads one saga and its steps from the log in db. A row whose steps
// cannot be decoded is an [ErrUnreadable] error, with the saga as far as
// it could be read (no steps).
func Get(ctx context.Context, db *sqldb.DB, id string) (Saga, error) {
	return get(ctx, db, id)
}

// get reads one saga, with db or inside a transaction.
func get(ctx context.Context, q interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}, id string) (Saga, error) {
	var s Saga
	var input, steps string
	var deadline, created, updated int64
	var finished sql.NullInt64
	err := q.QueryRowContext(ctx, `SELECT id, definition, version, input, state, reason, last_error, cancel_reason,
		deadline_at, created_at, updated_at, finished_at, lease_owner, steps FROM saga WHERE id = $1`, id).Scan(
		&s.ID, &s.Definition, &s.Version, &input, &s.State, &s.Reason, &s.LastError, &s.CancelReason,
		&deadline, &created, &updated, &finished, &s.LeaseOwner, &steps)
	if errors.Is(err, sql.ErrNoRows) {
		return Saga{}, notFound(id)
	}
	if err != nil {
		return Saga{}, fmt.Errorf("saga: read %s: %w", id, err)
	}
	s.Input = rawOrNil(input)
	s.DeadlineAt, s.CreatedAt, s.UpdatedAt = fromUS(deadline), fromUS(created), fromUS(updated)
	if finished.Valid {
		t := fromUS(finished.Int64)
		s.FinishedAt = &t
	}
	if s.Steps, err = decodeSteps(steps); err != nil {
		return s, fmt.Errorf("%w: %s: %v", ErrUnreadable, id, err)
	}
	return s, nil
}

// Filter selects sagas for [List].
type Filter struct {
	State      State  // empty: any
	Definition string // empty: any
	Limit      int    // default 100
}

// List returns sagas from the log, most recently updated first, without
// their steps. A state that is none of [States] is a [sysops.EInvalid]
// error.
func List(ctx context.Context, db *sqldb.DB, f Filter) ([]Saga, error) {
	if f.State != "" && !slices.Contains(States, f.State) {
		names := make([]string, len(States))
		for i, st := range States {
			names[i] = string(st)
		}
		return nil, sysops.Errorf(sysops.EInvalid, "unknown saga state %q (%s)", f.State, strings.Join(names, ", "))
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	q := `SELECT id, definition, version, state, reason, last_error, created_at, updated_at FROM saga WHERE 1 = 1`
	args := []any{f.Limit}
	if f.State != "" {
		args = append(args, string(f.State))
		q += fmt.Sprintf(" AND state = $%d", len(args))
	}
	if f.Definition != "" {
		args = append(args, f.Definition)
		q += fmt.Sprintf(" AND definition = $%d", len(args))
	}
	rows, err := db.QueryContext(ctx, q+` ORDER BY updated_at DESC, id LIMIT $1`, args...)
	if err != nil {
		return nil, fmt.Errorf("saga: list: %w", err)
	}
	defer rows.Close()
	out := []Saga{}
	for rows.Next() {
		var s Saga
		var created, updated int64
		if err := rows.Scan(&s.ID, &s.Definition, &s.Version, &s.State, &s.Reason, &s.LastError, &created, &updated); err != nil {
			return nil, fmt.Errorf("saga: list: %w", err)
		}
		s.CreatedAt, s.UpdatedAt = fromUS(created), fromUS(updated)
		out = append(out, s)
	}
	return out, rows.Err()
}

// committer groups the log writes of concurrent sagas into shared
// transactions: whoever writes while a commit is in flight joins the next
// one. One fsync then covers many sagas' writes. On PostgreSQL each write
// is one statement, and a whole shared transaction goes to the server in
// one round trip ([sqldb.ExecBatch]).
type committer struct {
	db      *sqldb.DB
	ops     chan *op
	writes  atomic.Int64
	commits atomic.Int64
}

// op is one log write: fn, run in the shared transaction, or (where the
// write is a single statement) stmt, whose rows affected check turns into
// the write's outcome.
type op struct {
	ctx   context.Context
	stmt  sqldb.Stmt
	check func(rows int64) error
	done  chan error
}

const maxBatch = 256

func newCommitter(db *sqldb.DB) *committer {
	return &committer{db: db, ops: make(chan *op, maxBatch)}
}

// exec runs one statement in a transaction shared with other writers and
// returns check's verdict on the rows it affected once that transaction
// has committed.
func (c *committer) exec(ctx context.Context, stmt sqldb.Stmt, check func(rows int64) error) error {
	return c.submit(ctx, &op{ctx: ctx, stmt: stmt, check: check, done: make(chan error, 1)})
}

func (c *committer) submit(ctx context.Context, o *op) error {
	select {
	case c.ops <- o:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-o.done:
		return err
	case <-ctx.Done():
		// The write may still commit; the caller treats it as unknown.
		return ctx.Err()
	}
}

// run commits batches until ctx ends.
func (c *committer) run(ctx context.Context) {
	for {
		var first *op
		select {
		case <-ctx.Done():
			return
		case first = <-c.ops:
		}
		batch := []*op{first}
	fill:
		for len(batch) < maxBatch {
			select {
			case o := <-c.ops:
				batch = append(batch, o)
			default:
				break fill
			}
		}
		c.commit(ctx, batch)
	}
}

func (c *committer) commit(ctx context.Context, batch []*op) {
	results := make([]error, len(batch))
	stmts := make([]sqldb.Stmt, len(batch))
	for i, o := range batch {
		stmts[i] = o.stmt
	}
	rows, err := sqldb.ExecBatch(ctx, c.db, stmts)
	if err == nil {
		for i, o := range batch {
			results[i] = o.check(rows[i])
		}
	} else if be, ok := errors.AsType[*sqldb.BatchError](err); ok && len(batch) == 1 {
		err = be.Err
	}
	c.writes.Add(int64(len(batch)))
	if err == nil {
		c.commits.Add(1)
		for i, o := range batch {
			o.done <- results[i]
		}
		return
	}
	if len(batch) == 1 {
		batch[0].done <- err
		return
	}
	// One member failed (or the commit did): run each alone, so that one
	// bad write does not fail the others.
	c.writes.Add(-int64(len(batch)))
	for _, o := range batch {
		c.commit(ctx, []*op{o})
	}
}

// notFound is [ErrNotFound] for one saga, named in its message.
type notFound string

func (id notFound) Error() string     { return fmt.Sprintf("saga %q not found", string(id)) }
func (notFound) Is(target error) bool { return target == ErrNotFound }
