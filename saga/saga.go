package saga

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"
)

// MigrationSet names the saga log's migrations in the orchestrator's
// database.
const MigrationSet = "saga"

//go:embed migrations/postgres/*.sql migrations/sqlite/*.sql
var migrations embed.FS

// Migrations returns the schema of the saga log: table saga, one row per
// saga, its steps a JSON array in column steps. It has a directory per
// dialect (postgres, sqlite), as [sqldb.Migrate] expects.
func Migrations() fs.FS {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the embedded directory is part of the binary
	}
	return sub
}

// State is where a saga is in its life.
type State string

// The states of a saga. Committed, Compensated and Resolved are final.
const (
	Running        State = "running"         // executing actions forward
	Compensating   State = "compensating"    // undoing the steps that ran, last first
	Committed      State = "committed"       // every action applied
	Compensated    State = "compensated"     // every step that ran was undone
	NeedsAttention State = "needs_attention" // a retry budget ran out where going on is unsafe; a person decides
	Resolved       State = "resolved"        // a person closed it
)

// States lists every state a saga can be in.
var States = []State{Running, Compensating, Committed, Compensated, NeedsAttention, Resolved}

// Final reports whether s is a final state.
func (s State) Final() bool { return s == Committed || s == Compensated || s == Resolved }

// StepStatus is where one step of a saga is.
type StepStatus string

// The statuses of a step.
const (
	StepPending      StepStatus = "pending"
	StepRunning      StepStatus = "running"      // its action was (or is being) called
	StepDone         StepStatus = "done"         // its action succeeded
	StepFailed       StepStatus = "failed"       // its action failed for good
	StepCompensating StepStatus = "compensating" // its compensation was (or is being) called
	StepCompensated  StepStatus = "compensated"  // undone (or nothing to undo)
	StepSkipped      StepStatus = "skipped"      // a person skipped it
)

// Definition is a workflow: a name, a version and ordered steps. A saga
// always finishes on the definition version it started with, so a new
// version is registered beside the old one until no saga uses the old.
type Definition struct {
	Name    string
	Version int
	Steps   []Step
	// Deadline is how long a saga may run forward; past it, the steps
	// that ran are compensated. Default 1 minute.
	Deadline time.Duration
}

// Step is one local transaction of a participant, and how to undo it.
type Step struct {
	// Name identifies the step within its definition (and in idempotency
	// keys). Required.
	Name string
	// Participant is the service the step calls: steps of one participant
	// share its circuit breaker and concurrency limit. Default Name.
	Participant string
	// Action applies the step. Required, unless ActionBatch is set.
	Action Func
	// Compensate undoes the step: a business reversal (cancel, refund,
	// release), idempotent, and harmless when the action never arrived —
	// the participant must then refuse the late action. Nil: nothing to
	// undo.
	Compensate Func
	// ActionBatch and CompensateBatch, when set, are used instead of
	// Action and Compensate: the calls of this step made while an earlier
	// batch of it is in flight, by all the sagas the orchestrator drives,
	// go to the participant together, up to Config.MaxBatch at a time, in
	// one call of the BatchFunc. A participant that applies a batch in
	// one transaction pays one round trip and one commit for all of them.
	// A saga driven alone goes at once, in a batch of one: batching adds
	// no wait. Everything else — the log written before and after each
	// call, retries, the breaker and concurrency limit (a batch is one
	// call, and Timeout bounds the batch), idempotency keys — is as for
	// single calls.
	ActionBatch     BatchFunc
	CompensateBatch BatchFunc
	// Timeout bounds each call. Default 5 seconds.
	Timeout time.Duration
	// Retry is the action's retry budget; CompensationRetry the
	// compensation's (default: the action's, with at least 10 attempts).
	Retry             RetryPolicy
	CompensationRetry RetryPolicy
	// Forward marks a step that is retried forward and never compensated
	// (a step after the pivot): when its budget runs out the saga needs
	// attention instead of compensating.
	Forward bool
}

// RetryPolicy is a retry budget: exponential backoff with full jitter between
// Initial and Max, at most MaxAttempts calls in all.
type RetryPolicy struct {
	MaxAttempts int           // default 5
	Initial     time.Duration // default 50 ms
	Max         time.Duration // default 2 s
}

func (r RetryPolicy) withDefaults(attempts int) RetryPolicy {
	if r.MaxAttempts <= 0 {
		r.MaxAttempts = attempts
	}
	if r.Initial <= 0 {
		r.Initial = 50 * time.Millisecond
	}
	if r.Max <= 0 {
		r.Max = 2 * time.Second
	}
	return r
}

// Func calls a participant for one step. It returns the step's output (a
// JSON value, or nil), which later steps and compensations see.
type Func func(ctx context.Context, c Call) (json.RawMessage, error)

// Call is what a step function gets.
type Call struct {
	SagaID string
	Step   string
	// Key is the idempotency key of this call, derived from the saga id,
	// the step and whether it is the action or the compensation: the same
	// on every retry and after any crash, so a participant that honours it
	// applies the call once.
	Key string
	// Attempt counts calls of this action (or compensation), from 1.
	Attempt int
	// Input is the saga's input.
	Input json.RawMessage
	// Outputs holds the outputs of the steps whose actions succeeded, by
	// step name.
	Outputs map[string]json.RawMessage
}

// Decode unmarshals the saga's input into v.
func (c Call) Decode(v any) error { return json.Unmarshal(c.Input, v) }

// Output unmarshals a step's output into v; false if the step has none.
func (c Call) Output(step string, v any) bool {
	b, ok := c.Outputs[step]
	return ok && len(b) > 0 && json.Unmarshal(b, v) == nil
}

// The longest saga id and step name: the keys made of them ([ActionKey],
// [CompensationKey]) are then at most 205 printable ASCII characters
// without spaces, which a participant's Idempotency-Key takes.
const (
	MaxIDLength       = 128
	MaxStepNameLength = 64
)

// keyPart reports whether s may go into an idempotency key: 1 to max
// printable ASCII characters, no spaces.
func keyPart(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := range len(s) {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// ActionKey and CompensationKey are the idempotency keys of a step's calls.
func ActionKey(sagaID, step string) string       { return sagaID + "/" + step + "/action" }
func CompensationKey(sagaID, step string) string { return sagaID + "/" + step + "/compensate" }

// Reject wraps err as a business rejection: the participant refused the
// step for good (no expert free, say). It is not retried and does not
// count against the participant's circuit breaker; the saga compensates.
func Reject(err error) error { return &rejection{err} }

type rejection struct{ err error }

func (r *rejection) Error() string { return r.err.Error() }
func (r *rejection) Unwrap() error { return r.err }

// IsRejection reports whether err is a business rejection.
func IsRejection(err error) bool {
	_, ok := errors.AsType[*rejection](err)
	return ok
}

// Errors.
var (
	ErrNotFound   = errors.New("saga: not found")
	ErrUnknown    = errors.New("saga: unknown definition")
	ErrWrongState = errors.New("saga: not in a state that allows this")
	ErrLeaseLost  = errors.New("saga: lease lost to another orchestrator")
	// ErrUnreadable: a saga's row in the log cannot be read back (its
	// steps column was edited by hand, say). Get returns what it could
	// read with it; the orchestrator sets the saga aside as needs
	// attention, and only Resolve can close it.
	ErrUnreadable = errors.New("saga: log row unreadable")
	// ErrInvalidID: a saga id passed to Begin is not 1 to MaxIDLength
	// printable ASCII characters without spaces.
	ErrInvalidID     = errors.New("saga: invalid saga id")
	errStopped       = errors.New("saga: orchestrator stopped")
	errNoDefinitions = errors.New("saga: no definitions")
)

func (d Definition) validate() error {
	if d.Name == "" || d.Version <= 0 {
		return fmt.Errorf("saga: definition needs a name and a version > 0 (got %q v%d)", d.Name, d.Version)
	}
	if len(d.Steps) == 0 {
		return fmt.Errorf("saga: definition %s v%d has no steps", d.Name, d.Version)
	}
	seen := map[string]bool{}
	for i, s := range d.Steps {
		if s.Name == "" || (s.Action == nil && s.ActionBatch == nil) {
			return fmt.Errorf("saga: definition %s v%d: step %d needs a name and an action", d.Name, d.Version, i)
		}
		if seen[s.Name] {
			return fmt.Errorf("saga: definition %s v%d: step name %q repeats", d.Name, d.Version, s.Name)
		}
		if !keyPart(s.Name, MaxStepNameLength) {
			return fmt.Errorf("saga: definition %s v%d: step name %q is not 1 to %d printable ASCII characters without spaces",
				d.Name, d.Version, s.Name, MaxStepNameLength)
		}
		seen[s.Name] = true
	}
	return nil
}

func (d Definition) withDefaults() Definition {
	if d.Deadline <= 0 {
		d.Deadline = time.Minute
	}
	steps := make([]Step, len(d.Steps))
	for i, s := range d.Steps {
		if s.Participant == "" {
			s.Participant = s.Name
		}
		if s.Timeout <= 0 {
			s.Timeout = 5 * time.Second
		}
		s.Retry = s.Retry.withDefaults(5)
		s.CompensationRetry = s.CompensationRetry.withDefaults(max(10, s.Retry.MaxAttempts))
		steps[i] = s
	}
	d.Steps = steps
	return d
}
