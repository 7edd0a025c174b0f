package outbox

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/sqldb"
)

// Row is an outbox row as operators see it.
type Row struct {
	Seq           int64      `json:"seq"`
	EventID       string     `json:"event_id"`
	AggregateType string     `json:"aggregate_type"`
	AggregateID   string     `json:"aggregate_id"`
	AggregateSeq  int64      `json:"aggregate_seq"`
	EventType     string     `json:"event_type"`
	Subject       string     `json:"subject"`
	Status        Status     `json:"status"`
	Attempts      int        `json:"attempts"`
	LastError     string     `json:"last_error,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
	NextAttemptAt time.Time  `json:"next_attempt_at"`
	SentAt        *time.Time `json:"sent_at,omitempty"`
}

// ListOptions filters [List].
type ListOptions struct {
	// Status selects rows in one state; empty means dead.
	Status Status
	// Limit caps the rows returned; default 100.
	Limit int
}

func validStatus(s Status) error {
	switch s {
	case StatusPending, StatusSent, StatusDead:
		return nil
	}
	return sysops.Errorf(sysops.EInvalid, "status %q is not one of pending, sent, dead", s)
}

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

// List returns outbox rows in one state, oldest first.
func List(ctx context.Context, db *sqldb.DB, opts ListOptions) ([]Row, error) {
	status := cmp.Or(opts.Status, StatusDead)
	if err := validStatus(status); err != nil {
		return nil, err
	}
	limit := cmp.Or(opts.Limit, 100)
	q, err := db.QueryContext(ctx, `SELECT seq, event_id, aggregate_type, aggregate_id, aggregate_seq, event_type,
		subject, status, attempts, last_error, created_at, next_attempt_at, sent_at
		FROM outbox WHERE status = $1 ORDER BY seq LIMIT $2`, string(status), limit)
	if err != nil {
		return nil, fmt.Errorf("outbox: list: %w", err)
	}
	defer q.Close()
	out := []Row{}
	for q.Next() {
		var r Row
		var lastErr sql.NullString
		var created, next int64
		var sent sql.NullInt64
		if err := q.Scan(&r.Seq, &r.EventID, &r.AggregateType, &r.AggregateID, &r.AggregateSeq, &r.EventType,
			&r.Subject, &r.Status, &r.Attempts, &lastErr, &created, &next, &sent); err != nil {
			return nil, fmt.Errorf("outbox: list: %w", err)
		}
		r.LastError = lastErr.String
		r.CreatedAt, r.NextAttemptAt = fromMicros(created), fromMicros(next)
		if sent.Valid {
			t := fromMicros(sent.Int64)
			r.SentAt = &t
		}
		out = append(out, r)
	}
	return out, q.Err()
}

// Retry returns the dead rows with the given seqs to pending with a fresh
// attempt budget, due now, and returns how many changed. No seqs, no rows:
// an empty selection never means all of them (see [RetryAll]).
func Retry(ctx context.Context, db *sqldb.DB, seqs ...int64) (int64, error) {
	if len(seqs) == 0 {
		return 0, nil
	}
	return retry(ctx, db, seqs)
}

// RetryAll returns every dead row to pending, as [Retry] does.
func RetryAll(ctx context.Context, db *sqldb.DB) (int64, error) { return retry(ctx, db, nil) }

func retry(ctx context.Context, db *sqldb.DB, seqs []int64) (int64, error) {
	where, args := deadWhere(seqs, 2)
	return changeDead(ctx, db, "retry", `UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = $1 WHERE `+where,
		append([]any{micros(time.Now())}, args...))
}

// Purge deletes the dead rows with the given seqs and returns how many.
// Their events are lost for good, and the later events of their
// aggregates are released to be published. No seqs, no rows: an empty
// selection never means all of them (see [PurgeAll]).
func Purge(ctx context.Context, db *sqldb.DB, seqs ...int64) (int64, error) {
	if len(seqs) == 0 {
		return 0, nil
	}
	return purge(ctx, db, seqs)
}

// PurgeAll deletes every dead row, as [Purge] does.
func PurgeAll(ctx context.Context, db *sqldb.DB) (int64, error) { return purge(ctx, db, nil) }

func purge(ctx context.Context, db *sqldb.DB, seqs []int64) (int64, error) {
	where, args := deadWhere(seqs, 1)
	return changeDead(ctx, db, "purge", `DELETE FROM outbox WHERE `+where, args)
}

// deadWhere selects the dead rows with seqs (its parameters numbered from
// first), or all dead rows for nil.
func deadWhere(seqs []int64, first int) (string, []any) {
	if seqs == nil {
		return `status = 'dead'`, nil
	}
	in, args := inList(seqs, first)
	return `status = 'dead' AND seq IN (` + in + `)`, args
}

// changeDead runs a statement on dead rows, and tells the relays when it
// changed any.
func changeDead(ctx context.Context, db *sqldb.DB, verb, query string, args []any) (int64, error) {
	res, err := db.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, fmt.Errorf("outbox: %s: %w", verb, err)
	}
	n, _ := res.RowsAffected()
	if n > 0 {
		deadChanged(db)
	}
	return n, nil
}

// Stats summarizes the outbox: how many rows are in each state, and the
// age of the oldest pending row (the relay's lag).
type Stats struct {
	Pending          int64   `json:"pending"`
	Sent             int64   `json:"sent"`
	Dead             int64   `json:"dead"`
	OldestPendingAge float64 `json:"oldest_pending_seconds"`
}

// GetStats returns the outbox's [Stats].
func GetStats(ctx context.Context, db *sqldb.DB) (Stats, error) {
	var s Stats
	q, err := db.QueryContext(ctx, `SELECT status, count(*), min(created_at) FROM outbox GROUP BY status`)
	if err != nil {
		return s, fmt.Errorf("outbox: stats: %w", err)
	}
	defer q.Close()
	for q.Next() {
		var status string
		var n, oldest int64
		if err := q.Scan(&status, &n, &oldest); err != nil {
			return s, fmt.Errorf("outbox: stats: %w", err)
		}
		switch Status(status) {
		case StatusPending:
			s.Pending = n
			s.OldestPendingAge = time.Since(fromMicros(oldest)).Seconds()
		case StatusSent:
			s.Sent = n
		case StatusDead:
			s.Dead = n
		}
	}
	return s, q.Err()
}
