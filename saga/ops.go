package saga

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/internal/httpx"
	"github.com/sysops-squad/sysops/sqldb"
)

// Operations on the log, for people: they work on the database directly
// (the orchestrator need not run) and hand the saga back to whichever
// orchestrator polls next.

// Cancel asks a running saga to turn back: its driver compensates the
// steps that ran, before its next step (or retry). A saga past a Forward
// step cannot be cancelled; its driver ignores the request.
func Cancel(ctx context.Context, db *sqldb.DB, id, reason string) error {
	if reason == "" {
		reason = "cancelled"
	}
	res, err := db.ExecContext(ctx, `UPDATE saga SET cancel_reason = $1 WHERE id = $2 AND state = 'running'`, reason, id)
	if err != nil {
		return fmt.Errorf("saga: cancel %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return nil
	}
	s, err := Get(ctx, db, id)
	if err != nil {
		return err
	}
	return fmt.Errorf("%w: saga %s is %s; only a running saga can be cancelled", ErrWrongState, id, s.State)
}

// Retry gives a saga that needs attention a fresh retry budget for the
// step that ran out of it, and hands it back to the orchestrators.
func Retry(ctx context.Context, db *sqldb.DB, id string) error {
	return change(ctx, db, id, func(tx *sql.Tx, s Saga, now time.Time) error {
		if s.State != NeedsAttention {
			return fmt.Errorf("%w: saga %s is %s, not needs_attention", ErrWrongState, id, s.State)
		}
		if s.Steps == nil {
			return unreadableSteps(id)
		}
		state, idx := resumeState(s)
		if idx >= 0 {
			if state == Compensating {
				s.Steps[idx].CompensationAttempts = 0
			} else {
				s.Steps[idx].Attempts = 0
			}
		}
		return handBack(ctx, tx, s, state, now)
	})
}

// Skip marks the step a saga that needs attention is stuck on as skipped
// (a person did by hand what it does, or decided it need not be done) and
// hands the saga back to go on from there.
func Skip(ctx context.Context, db *sqldb.DB, id string) error {
	return change(ctx, db, id, func(tx *sql.Tx, s Saga, now time.Time) error {
		if s.State != NeedsAttention {
			return fmt.Errorf("%w: saga %s is %s, not needs_attention", ErrWrongState, id, s.State)
		}
		if s.Steps == nil {
			return unreadableSteps(id)
		}
		state, idx := resumeState(s)
		if idx < 0 {
			return fmt.Errorf("%w: saga %s has no step to skip", ErrWrongState, id)
		}
		s.Steps[idx].Status, s.Steps[idx].UpdatedAt = StepSkipped, now
		return handBack(ctx, tx, s, state, now)
	})
}

// Resolve closes a saga that needs attention: a person settled it. note
// says how.
func Resolve(ctx context.Context, db *sqldb.DB, id, note string) error {
	return change(ctx, db, id, func(tx *sql.Tx, s Saga, now time.Time) error {
		if s.State.Final() {
			return fmt.Errorf("%w: saga %s is already %s", ErrWrongState, id, s.State)
		}
		if s.State != NeedsAttention {
			return fmt.Errorf("%w: saga %s is %s, not needs_attention", ErrWrongState, id, s.State)
		}
		_, err := tx.ExecContext(ctx, `UPDATE saga SET state = 'resolved', reason = $1, finished_at = $2, updated_at = $2,
			lease_owner = '', lease_until = 0 WHERE id = $3`, "resolved by hand: "+note, us(now), id)
		return err
	})
}

// unreadableSteps refuses to retry or skip a saga whose steps cannot be
// read: there is no telling where it stopped.
func unreadableSteps(id string) error {
	return fmt.Errorf("%w: saga %s: its steps in the log cannot be read; look at its row and resolve it by hand", ErrWrongState, id)
}

// resumeState finds where a saga that needs attention stopped: going
// back (a compensation ran out of budget) or forward (a Forward step
// did), and the step.
func resumeState(s Saga) (State, int) {
	for i := len(s.Steps) - 1; i >= 0; i-- {
		if s.Steps[i].Status == StepCompensating {
			return Compensating, i
		}
	}
	for i, r := range s.Steps {
		if r.Status == StepRunning || r.Status == StepFailed {
			return Running, i
		}
	}
	return Running, -1
}

// handBack writes s's steps and state, and leaves the saga to whichever
// orchestrator polls next: it is due now, by the database's clock.
func handBack(ctx context.Context, tx *sql.Tx, s Saga, state State, now time.Time) error {
	steps, err := encodeSteps(s.Steps)
	if err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, `UPDATE saga SET state = $1, last_error = '', next_run_at = $2, updated_at = $2,
		lease_owner = '', lease_until = 0, steps = $4 WHERE id = $3`, string(state), us(now), s.ID, steps)
	return err
}

// change runs fn on the saga as it is, in a transaction that keeps
// anyone else from writing it meanwhile, and fails if a write changed
// it since the saga was last read, rather than act on what a person
// did not see. now is the database's time, which the orchestrators go
// by ([sqldb.Clock]), not this machine's.
func change(ctx context.Context, db *sqldb.DB, id string, fn func(tx *sql.Tx, s Saga, now time.Time) error) error {
	seen, err := Get(ctx, db, id)
	if err != nil && !errors.Is(err, ErrUnreadable) {
		return err
	}
	return sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
		lock := ""
		if db.Dialect() == sqldb.Postgres {
			lock = " FOR UPDATE"
		}
		var updated int64
		if err := tx.QueryRowContext(ctx, `SELECT updated_at FROM saga WHERE id = $1`+lock, id).Scan(&updated); err != nil {
			return err
		}
		if updated != us(seen.UpdatedAt) {
			return fmt.Errorf("%w: saga %s changed meanwhile; look again", ErrWrongState, id)
		}
		s, err := get(ctx, tx, id)
		if errors.Is(err, ErrUnreadable) {
			s.Steps = nil // fn sees no step: only Resolve goes on
		} else if err != nil {
			return err
		}
		now, err := sqldb.DatabaseNow(ctx, tx, db.Dialect())
		if err != nil {
			return err
		}
		return fn(tx, s, now)
	})
}

// Handler returns the saga log's operations endpoints, mounted under
// prefix (such as /ops/sagas):
//
//	GET  {prefix}?state=needs_attention&definition=D&limit=N
//	GET  {prefix}/{id}                   the saga with its steps
//	POST {prefix}/{id}/retry             fresh budget for the stuck step
//	POST {prefix}/{id}/skip              skip the stuck step and go on
//	POST {prefix}/{id}/resolve           {"note": "..."}: close it by hand
//	POST {prefix}/{id}/cancel            {"reason": "..."}: turn a running saga back
func Handler(prefix string, db *sqldb.DB, logger *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET "+prefix, httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
		q, err := httpx.Query(r, "state", "definition", "limit")
		if err != nil {
			return err
		}
		f := Filter{State: State(q.Get("state")), Definition: q.Get("definition")}
		if f.Limit, err = httpx.Limit(q, 0, 1000); err != nil {
			return err
		}
		list, err := List(r.Context(), db, f)
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"sagas": list})
		return nil
	}))
	mux.Handle("GET "+prefix+"/{id}", httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
		if _, err := httpx.Query(r); err != nil {
			return err
		}
		s, err := Get(r.Context(), db, r.PathValue("id"))
		if err != nil {
			return opsError(err)
		}
		httpx.WriteJSON(w, http.StatusOK, s)
		return nil
	}))
	act := func(fn func(r *http.Request, id string) error) http.Handler {
		return httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
			id := r.PathValue("id")
			if err := fn(r, id); err != nil {
				return opsError(err)
			}
			s, err := Get(r.Context(), db, id)
			if err != nil {
				return opsError(err)
			}
			httpx.WriteJSON(w, http.StatusOK, s)
			return nil
		})
	}
	text := func(r *http.Request, field string) (string, error) {
		if r.ContentLength == 0 {
			return "", nil
		}
		body := map[string]string{}
		if err := httpx.DecodeJSON(nil, r, &body); err != nil {
			return "", err
		}
		for k := range body {
			if k != field {
				return "", sysops.Errorf(sysops.EInvalid, "unknown field %q (known: %s)", k, field)
			}
		}
		return body[field], nil
	}
	mux.Handle("POST "+prefix+"/{id}/retry", act(func(r *http.Request, id string) error { return Retry(r.Context(), db, id) }))
	mux.Handle("POST "+prefix+"/{id}/skip", act(func(r *http.Request, id string) error { return Skip(r.Context(), db, id) }))
	mux.Handle("POST "+prefix+"/{id}/resolve", act(func(r *http.Request, id string) error {
		note, err := text(r, "note")
		if err != nil {
			return err
		}
		if note == "" {
			return sysops.Errorf(sysops.EInvalid, "field \"note\" is required: say how it was settled")
		}
		return Resolve(r.Context(), db, id, note)
	}))
	mux.Handle("POST "+prefix+"/{id}/cancel", act(func(r *http.Request, id string) error {
		reason, err := text(r, "reason")
		if err != nil {
			return err
		}
		return Cancel(r.Context(), db, id, reason)
	}))
	return mux
}

func opsError(err error) error {
	switch {
	case errors.Is(err, ErrNotFound):
		return sysops.Errorf(sysops.ENotFound, "%v", err)
	case errors.Is(err, ErrWrongState):
		return sysops.Errorf(sysops.EConflict, "%v", err)
	case errors.Is(err, ErrUnreadable):
		// The operator needs the details, which an internal error hides.
		return sysops.Errorf(sysops.EConflict, "%v (look at its row, then resolve it by hand)", err)
	}
	return err
}
