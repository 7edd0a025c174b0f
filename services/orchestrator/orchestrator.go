// Package orchestrator is the Orchestrator service: it runs the Sysops
// Squad's cross-service workflows — create ticket, register customer,
// complete ticket, cancel support plan, cancel ticket — as orchestrated
// sagas (package saga), and owns their
// durable log (table saga) in its own database. The step
// tables of each workflow are in docs/saga.md.
//
//	POST /sagas/create-ticket       {"customer_id", "description", "priority", "skill", "zip"}
//	POST /sagas/register-customer   {"name", "email", "zip", "plan"}
//	POST /sagas/complete-ticket     {"ticket_id", "notes"}
//	POST /sagas/cancel-plan         {"customer_id", "reason"}
//	POST /sagas/cancel-ticket       {"ticket_id"}
//	GET  /sagas/{id}            a saga with its steps
//	/ops/sagas...               list, show, retry, skip, resolve, cancel (saga.Handler)
//
// Create ticket: open the ticket (compensation: cancel it) → count it on
// the customer (compensation: undo that count) → assign an expert by skill
// and zip (compensation: release the expert) → mark the ticket assigned
// (retried forward, never compensated: past the assignment the ticket
// exists for good). Every call carries an idempotency key derived from
// the saga and the step; the participants apply each once and refuse an
// action whose compensation overtook it.
//
// A POST waits for the outcome up to Config.Wait: 201 with the result
// when committed, 409 naming the reason when compensated, or 202 with the
// saga id to poll at GET /sagas/{id} while it is still running (or needs
// attention).
package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/internal/host"
	"github.com/sysops-squad/sysops/internal/httpx"
	"github.com/sysops-squad/sysops/internal/svc"
	"github.com/sysops-squad/sysops/outbox"
	"github.com/sysops-squad/sysops/saga"
	"github.com/sysops-squad/sysops/sqldb"
)

// Name is the service's name.
const Name = "orchestrator"

// The sagas the service runs.
const (
	CreateTicket     = "create-ticket"
	RegisterCustomer = "register-customer"
	CompleteTicket   = "complete-ticket"
	CancelPlan       = "cancel-plan"
	CancelTicket     = "cancel-ticket"
)

// Config configures the service.
type Config struct {
	// Wait is how long a POST waits for its saga's outcome before
	// answering 202. Default 10 seconds.
	Wait time.Duration
	// Deadline is how long a saga may run forward before it compensates.
	// Default 30 seconds.
	Deadline time.Duration
	// Saga configures the orchestrator (leases, breakers, limits).
	Saga saga.Config
	// StepTimeout bounds each call to a participant. Default 3 seconds.
	StepTimeout time.Duration
	// Retry is each step's retry budget. Default 4 attempts, 50 ms to 1 s.
	Retry saga.RetryPolicy
	// CompensationRetry is each compensation's; past it the saga needs
	// attention. Default 10 attempts, 50 ms to 2 s.
	CompensationRetry saga.RetryPolicy
}

// Spec describes the service to its host.
func Spec() host.Spec { return SpecWith(Config{}) }

// SpecWith describes the service configured by cfg.
func SpecWith(cfg Config) host.Spec {
	return host.Spec{
		Name: Name, Migrations: saga.Migrations(), Streams: svc.Streams(Name),
		Start: func(ctx context.Context, deps host.Deps) (http.Handler, error) {
			cfg := cfg
			if cfg.Saga.Owner == "" {
				// Unique while it runs (one process per address); the same
				// after a restart, which then takes its sagas back at once.
				hostname, _ := os.Hostname()
				cfg.Saga.Owner = hostname + "/" + deps.URL
			}
			s, err := New(deps.DB, deps.Peers, cfg, deps.Logger)
			if err != nil {
				return nil, err
			}
			if err := s.orch.Start(ctx); err != nil {
				return nil, err
			}
			go func() {
				<-ctx.Done()
				s.orch.Stop()
			}()
			return s.Handler(), nil
		},
	}
}

// Service is the Orchestrator service.
type Service struct {
	db                                    *sqldb.DB
	orch                                  *saga.Orchestrator
	cfg                                   Config
	logger                                *slog.Logger
	ticket, customer, assignment          *svc.Client
	contract, billing, survey, completion *svc.Client
}

// New returns the service over its database (whose saga tables exist),
// calling its peers.
func New(db *sqldb.DB, peers svc.Peers, cfg Config, logger *slog.Logger) (*Service, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// The defaults live here, not in SpecWith alone: a bench or a test that
	// builds the service with New runs the workflows the system runs.
	if cfg.Wait <= 0 {
		cfg.Wait = 10 * time.Second
	}
	if cfg.Deadline <= 0 {
		cfg.Deadline = 30 * time.Second
	}
	if cfg.StepTimeout <= 0 {
		cfg.StepTimeout = 3 * time.Second
	}
	if cfg.Retry.MaxAttempts <= 0 {
		cfg.Retry = saga.RetryPolicy{MaxAttempts: 4, Initial: 50 * time.Millisecond, Max: time.Second}
	}
	cfg.Saga.Logger = logger
	s := &Service{db: db, cfg: cfg, logger: logger,
		ticket:     svc.NewClient(peers, "ticket").WithoutRetries(),
		customer:   svc.NewClient(peers, "customer").WithoutRetries(),
		assignment: svc.NewClient(peers, "assignment").WithoutRetries(),
		contract:   svc.NewClient(peers, "contract").WithoutRetries(),
		billing:    svc.NewClient(peers, "billing").WithoutRetries(),
		survey:     svc.NewClient(peers, "survey").WithoutRetries(),
		completion: svc.NewClient(peers, "completion").WithoutRetries()}
	orch, err := saga.New(db, cfg.Saga, s.createTicket(), s.registerCustomer(), s.completeTicket(), s.cancelPlan(), s.cancelTicket())
	if err != nil {
		return nil, err
	}
	s.orch = orch
	return s, nil
}

// Orchestrator returns the saga orchestrator (for tests and benchmarks).
func (s *Service) Orchestrator() *saga.Orchestrator { return s.orch }

// TicketRequest is the input of the create-ticket saga.
type TicketRequest struct {
	TicketID    string `json:"ticket_id"`
	CustomerID  string `json:"customer_id"`
	Description string `json:"description"`
	Priority    string `json:"priority"`
	Skill       string `json:"skill"`
	Zip         string `json:"zip"`
}

// call adapts a participant call to a saga step: the step's key becomes
// the Idempotency-Key, and the participant's refusals (invalid, not
// found, conflict) are business rejections, not retried.
func call(ctx context.Context, c saga.Call, client *svc.Client, path string, body any) (json.RawMessage, error) {
	ctx = svc.WithIdempotencyKey(svc.WithActor(ctx, "orchestrator"), c.Key)
	var out json.RawMessage
	err := client.Post(ctx, path, body, &out)
	return out, refusal(err)
}

// refusal marks a participant's refusals (invalid, not found, conflict)
// as business rejections, not retried.
func refusal(err error) error {
	switch sysops.CodeOf(err) {
	case sysops.EInvalid, sysops.ENotFound, sysops.EConflict:
		return saga.Reject(err)
	}
	return err
}

// batched adapts a participant call to a batched step: the calls of many
// sagas go in one POST /batch, each keyed as it would be alone (a call
// retried alone, or in another batch, is applied once). req gives a
// call's path and body.
func batched[T any](client *svc.Client, req func(c saga.Call, in T) (path string, body any)) saga.BatchFunc {
	return func(ctx context.Context, calls []saga.Call) ([]saga.Result, error) {
		out := make([]saga.Result, len(calls))
		var bcs []svc.BatchCall
		var idx []int
		for i, c := range calls {
			var in T
			if err := c.Decode(&in); err != nil {
				out[i].Err = saga.Reject(fmt.Errorf("saga input: %w", err))
				continue
			}
			path, body := req(c, in)
			bcs, idx = append(bcs, svc.BatchCall{Key: c.Key, Path: path, Body: body}), append(idx, i)
		}
		if len(bcs) == 0 {
			return out, nil
		}
		answers, errs, err := client.PostBatch(svc.WithActor(ctx, "orchestrator"), bcs)
		if err != nil {
			return nil, err
		}
		for j, i := range idx {
			out[i] = saga.Result{Output: answers[j], Err: refusal(errs[j])}
		}
		return out, nil
	}
}

// stepFunc is a step's action or compensation, given the saga's input
// decoded.
type stepFunc[T any] func(ctx context.Context, c saga.Call, in T) (json.RawMessage, error)

// typed adapts f to a [saga.Func]; an input that does not decode is
// refused (it never will).
func typed[T any](f stepFunc[T]) saga.Func {
	if f == nil {
		return nil
	}
	return func(ctx context.Context, c saga.Call) (json.RawMessage, error) {
		var in T
		if err := c.Decode(&in); err != nil {
			return nil, saga.Reject(fmt.Errorf("saga input: %w", err))
		}
		return f(ctx, c, in)
	}
}

// newStep is a step of the service's timeouts and retry budgets.
func newStep[T any](s *Service, name, participant string, action, compensate stepFunc[T]) saga.Step {
	return saga.Step{Name: name, Participant: participant, Action: typed(action), Compensate: typed(compensate),
		Timeout: s.cfg.StepTimeout, Retry: s.cfg.Retry, CompensationRetry: s.cfg.CompensationRetry}
}

// forwardStep is a step past the pivot: retried forward (with a budget
// that outlasts a participant's restart), never compensated.
func forwardStep[T any](s *Service, name, participant string, action stepFunc[T]) saga.Step {
	st := newStep(s, name, participant, action, nil)
	st.Forward = true
	st.Retry = saga.RetryPolicy{MaxAttempts: 20, Initial: 50 * time.Millisecond, Max: time.Second}
	return st
}

// output decodes an earlier step's output (zero if it has none).
func output[T any](c saga.Call, step string) T {
	var v T
	c.Output(step, &v)
	return v
}

// Outputs of participants that later steps read.
type (
	ticketOut struct {
		CustomerID string `json:"customer_id"`
	}
	assignmentOut struct {
		ExpertID string `json:"expert_id"`
	}
	surveyOut struct {
		ID string `json:"id"`
	}
)

func esc(s string) string { return url.PathEscape(s) }

func (s *Service) createTicket() saga.Definition {
	opID := func(c saga.Call) string { return c.SagaID + "/count-ticket" }
	// Every call goes to its participant in batches: one transaction for
	// the calls of many sagas.
	open := newStep[TicketRequest](s, "open-ticket", "ticket", nil, nil)
	open.ActionBatch = batched(s.ticket, func(c saga.Call, in TicketRequest) (string, any) {
		return "/tickets", map[string]string{"id": in.TicketID, "customer_id": in.CustomerID,
			"description": in.Description, "priority": in.Priority, "skill": in.Skill, "zip": in.Zip}
	})
	open.CompensateBatch = batched(s.ticket, func(c saga.Call, in TicketRequest) (string, any) {
		return "/tickets/" + esc(in.TicketID) + "/cancel", nil
	})
	count := newStep[TicketRequest](s, "count-ticket", "customer", nil, nil)
	count.ActionBatch = batched(s.customer, func(c saga.Call, in TicketRequest) (string, any) {
		return "/customers/" + esc(in.CustomerID) + "/open-tickets", map[string]any{"delta": 1, "op_id": opID(c)}
	})
	count.CompensateBatch = batched(s.customer, func(c saga.Call, in TicketRequest) (string, any) {
		return "/customers/" + esc(in.CustomerID) + "/open-tickets/" + esc(opID(c)) + "/undo", nil
	})
	assign := newStep[TicketRequest](s, "assign-expert", "assignment", nil, nil)
	assign.ActionBatch = batched(s.assignment, func(c saga.Call, in TicketRequest) (string, any) {
		return "/assignments", map[string]string{"ticket_id": in.TicketID, "skill": in.Skill, "zip": in.Zip, "priority": in.Priority}
	})
	assign.CompensateBatch = batched(s.assignment, func(c saga.Call, in TicketRequest) (string, any) {
		return "/assignments/" + esc(in.TicketID) + "/release", nil
	})
	mark := forwardStep[TicketRequest](s, "mark-assigned", "ticket", nil)
	mark.ActionBatch = batched(s.ticket, func(c saga.Call, in TicketRequest) (string, any) {
		return "/tickets/" + esc(in.TicketID) + "/status", map[string]string{"status": "assigned"}
	})
	return saga.Definition{Name: CreateTicket, Version: 1, Deadline: s.cfg.Deadline, Steps: []saga.Step{open, count, assign, mark}}
}

// Registration is the input of the register-customer saga.
type Registration struct {
	CustomerID string `json:"customer_id"`
	ContractID string `json:"contract_id"`
	AccountID  string `json:"account_id"`
	Name       string `json:"name"`
	Email      string `json:"email"`
	Zip        string `json:"zip"`
	Plan       string `json:"plan"`
}

// registerCustomer: the profile (compensation: close it), the support
// plan (cancel it), the billing account with its first charge (close it,
// refunding the charge).
func (s *Service) registerCustomer() saga.Definition {
	profile := newStep(s, "profile", "customer",
		func(ctx context.Context, c saga.Call, in Registration) (json.RawMessage, error) {
			return call(ctx, c, s.customer, "/customers", map[string]string{"id": in.CustomerID, "name": in.Name, "email": in.Email,
				"zip": in.Zip, "support_plan": in.Plan})
		},
		func(ctx context.Context, c saga.Call, in Registration) (json.RawMessage, error) {
			return call(ctx, c, s.customer, "/customers/"+esc(in.CustomerID)+"/close", nil)
		})
	contract := newStep(s, "contract", "contract",
		func(ctx context.Context, c saga.Call, in Registration) (json.RawMessage, error) {
			return call(ctx, c, s.contract, "/contracts", map[string]string{"id": in.ContractID, "customer_id": in.CustomerID, "plan": in.Plan})
		},
		func(ctx context.Context, c saga.Call, in Registration) (json.RawMessage, error) {
			return call(ctx, c, s.contract, "/contracts/"+esc(in.ContractID)+"/cancel", map[string]string{"reason": "registration did not complete"})
		})
	billing := newStep(s, "billing-account", "billing",
		func(ctx context.Context, c saga.Call, in Registration) (json.RawMessage, error) {
			return call(ctx, c, s.billing, "/accounts", map[string]string{"id": in.AccountID, "customer_id": in.CustomerID, "plan": in.Plan})
		},
		func(ctx context.Context, c saga.Call, in Registration) (json.RawMessage, error) {
			return call(ctx, c, s.billing, "/accounts/"+esc(in.AccountID)+"/close", nil)
		})
	return saga.Definition{Name: RegisterCustomer, Version: 1, Deadline: s.cfg.Deadline, Steps: []saga.Step{profile, contract, billing}}
}

// Cancellation is the input of the cancel-plan saga.
type Cancellation struct {
	CustomerID string `json:"customer_id"`
	ContractID string `json:"contract_id"`
	// AccountID is optional: without it the close-account step looks up
	// the customer's account.
	AccountID string `json:"account_id,omitempty"`
	Reason    string `json:"reason"`
}

// cancelPlan: cancel the contract (compensation: reinstate it) → close
// the billing account, refunding the unused part of the month (the pivot:
// a refund is not taken back; if billing refuses, the contract is
// reinstated) → clear the plan on the customer's profile (forward only).
func (s *Service) cancelPlan() saga.Definition {
	// The op id names this saga's cancellation: the contract is cancelled
	// by one op (a racing cancel-plan is refused), and the compensation
	// undoes this op's cancellation only, never another saga's.
	opID := func(c saga.Call) string { return c.SagaID + "/cancel-contract" }
	cancelContract := newStep(s, "cancel-contract", "contract",
		func(ctx context.Context, c saga.Call, in Cancellation) (json.RawMessage, error) {
			return call(ctx, c, s.contract, "/contracts/"+esc(in.ContractID)+"/cancel", map[string]string{"reason": in.Reason, "op_id": opID(c)})
		},
		func(ctx context.Context, c saga.Call, in Cancellation) (json.RawMessage, error) {
			return call(ctx, c, s.contract, "/contracts/"+esc(in.ContractID)+"/reinstate", map[string]string{"op_id": opID(c)})
		})
	closeAccount := newStep(s, "close-account", "billing",
		func(ctx context.Context, c saga.Call, in Cancellation) (json.RawMessage, error) {
			if in.AccountID == "" { // the customer's account, looked up now
				var acct struct {
					ID string `json:"id"`
				}
				if err := s.billing.Get(ctx, "/accounts?customer_id="+url.QueryEscape(in.CustomerID), &acct); err != nil {
					if sysops.CodeOf(err) == sysops.ENotFound {
						return nil, saga.Reject(err)
					}
					return nil, err
				}
				in.AccountID = acct.ID
			}
			return call(ctx, c, s.billing, "/accounts/"+esc(in.AccountID)+"/close", nil)
		}, nil)
	profile := forwardStep(s, "profile", "customer", func(ctx context.Context, c saga.Call, in Cancellation) (json.RawMessage, error) {
		return call(ctx, c, s.customer, "/customers/"+esc(in.CustomerID)+"/support-plan", map[string]string{"plan": ""})
	})
	return saga.Definition{Name: CancelPlan, Version: 1, Deadline: s.cfg.Deadline, Steps: []saga.Step{cancelContract, closeAccount, profile}}
}

// TicketCancellation is the input of the cancel-ticket saga.
type TicketCancellation struct {
	TicketID string `json:"ticket_id"`
}

// cancelTicket: cancel the ticket (the pivot: an open or assigned ticket
// becomes cancelled; any other is refused with nothing to undo) → release
// its assignment and count it down on the customer, retried forward. Each
// is idempotent by the ticket, so cancelling twice applies each once.
func (s *Service) cancelTicket() saga.Definition {
	cancel := newStep(s, "cancel-ticket", "ticket", func(ctx context.Context, c saga.Call, in TicketCancellation) (json.RawMessage, error) {
		return call(ctx, c, s.ticket, "/tickets/"+esc(in.TicketID)+"/status", map[string]string{"status": "cancelled"})
	}, nil)
	release := forwardStep(s, "release-expert", "assignment", func(ctx context.Context, c saga.Call, in TicketCancellation) (json.RawMessage, error) {
		return call(ctx, c, s.assignment, "/assignments/"+esc(in.TicketID)+"/release", nil)
	})
	countDown := forwardStep(s, "count-down", "customer", func(ctx context.Context, c saga.Call, in TicketCancellation) (json.RawMessage, error) {
		t := output[ticketOut](c, "cancel-ticket")
		return call(ctx, c, s.customer, "/customers/"+esc(t.CustomerID)+"/open-tickets",
			map[string]any{"delta": -1, "op_id": CancelTicket + "/" + in.TicketID})
	})
	return saga.Definition{Name: CancelTicket, Version: 1, Deadline: s.cfg.Deadline, Steps: []saga.Step{cancel, release, countDown}}
}

// Completion is the input of the complete-ticket saga.
type Completion struct {
	TicketID string `json:"ticket_id"`
	Notes    string `json:"notes"`
}

// completeTicket: close the ticket — the pivot: a ticket that cannot be
// closed (not assigned) ends the saga with nothing to undo — then, retried
// forward and never compensated, the completion notes (assignment), the
// count (customer), the survey by delegation (survey) and the completion
// record (completion). Each is idempotent by the ticket, so completing a
// ticket twice applies each once.
func (s *Service) completeTicket() saga.Definition {
	closeTicket := newStep(s, "close-ticket", "ticket", func(ctx context.Context, c saga.Call, in Completion) (json.RawMessage, error) {
		return call(ctx, c, s.ticket, "/tickets/"+esc(in.TicketID)+"/status", map[string]string{"status": "completed"})
	}, nil)
	notes := forwardStep(s, "record-notes", "assignment", func(ctx context.Context, c saga.Call, in Completion) (json.RawMessage, error) {
		return call(ctx, c, s.assignment, "/assignments/"+esc(in.TicketID)+"/complete", map[string]string{"notes": in.Notes})
	})
	countDown := forwardStep(s, "count-down", "customer", func(ctx context.Context, c saga.Call, in Completion) (json.RawMessage, error) {
		t := output[ticketOut](c, "close-ticket")
		return call(ctx, c, s.customer, "/customers/"+esc(t.CustomerID)+"/open-tickets",
			map[string]any{"delta": -1, "op_id": CompleteTicket + "/" + in.TicketID})
	})
	survey := forwardStep(s, "send-survey", "survey", func(ctx context.Context, c saga.Call, in Completion) (json.RawMessage, error) {
		t, a := output[ticketOut](c, "close-ticket"), output[assignmentOut](c, "record-notes")
		return call(ctx, c, s.survey, "/surveys", map[string]string{"ticket_id": in.TicketID, "customer_id": t.CustomerID, "expert_id": a.ExpertID})
	})
	record := forwardStep(s, "record-completion", "completion", func(ctx context.Context, c saga.Call, in Completion) (json.RawMessage, error) {
		t, a, v := output[ticketOut](c, "close-ticket"), output[assignmentOut](c, "record-notes"), output[surveyOut](c, "send-survey")
		return call(ctx, c, s.completion, "/completions/"+esc(in.TicketID)+"/record",
			map[string]string{"customer_id": t.CustomerID, "expert_id": a.ExpertID, "notes": in.Notes, "survey_id": v.ID})
	})
	return saga.Definition{Name: CompleteTicket, Version: 1, Deadline: s.cfg.Deadline,
		Steps: []saga.Step{closeTicket, notes, countDown, survey, record}}
}

// sagaID derives a saga's id from the request's Idempotency-Key, so that
// a client retrying a POST reaches the same saga; without a key, a new id.
func sagaID(r *http.Request, definition string) string {
	if k := svc.IdempotencyKey(r.Context()); k != "" {
		return svc.SagaID(definition, k)
	}
	return definition + "-" + outbox.NewID()
}

// Outcome is the answer to a saga's POST.
type Outcome struct {
	SagaID string     `json:"saga_id"`
	State  saga.State `json:"state"`
	Reason string     `json:"reason,omitempty"`
	Result any        `json:"result,omitempty"`
}

// unlessBegun runs check, the guard of a new saga, unless the saga id
// exists already. A request repeated with its Idempotency-Key after its
// answer was lost (the client timed out, or the orchestrator was killed
// before it answered and resumed the saga after) must get that saga's
// outcome — and the guard would now refuse it, for the very work the
// saga did ("ticket is already completed").
func (s *Service) unlessBegun(ctx context.Context, id string, check func() error) error {
	_, err := saga.Get(ctx, s.db, id)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, saga.ErrNotFound):
		return check()
	}
	return err
}

// refuseWhileMaking refuses a workflow on an entity (what, id) that the
// saga of definition which makes it has not finished making: a ticket
// whose create-ticket saga is still assigning it or compensating, a
// customer whose registration is still running. A workflow then would race
// the saga — cancelling a ticket it goes on to assign, or that its
// compensation counts down a second time; cancelling a plan whose
// registration then compensates, after which the cancellation's own
// compensation would reinstate the plan of a closed customer; opening a
// ticket for a customer whose registration then compensates. The entity's
// id is prefix and the suffix of its saga's id, and the saga is logged
// before the entity exists, so a saga found ended has ended for good.
func (s *Service) refuseWhileMaking(ctx context.Context, what, id, prefix, definition, doing string) error {
	suffix, ok := strings.CutPrefix(id, prefix)
	if !ok {
		return nil // not made by a saga
	}
	sg, err := saga.Get(ctx, s.db, definition+"-"+suffix)
	switch {
	case errors.Is(err, saga.ErrNotFound):
		return nil
	case err != nil:
		return err
	case sg.State == saga.Committed || sg.State == saga.Compensated:
		return nil
	}
	return sysops.Errorf(sysops.EConflict, "%s %q is still being %s (saga %s is %s): try again once that saga ends",
		what, id, doing, sg.ID, sg.State)
}

// refuseWhileRegistering refuses a workflow for a customer whose
// registration saga has not ended.
func (s *Service) refuseWhileRegistering(ctx context.Context, customerID string) error {
	return s.refuseWhileMaking(ctx, "customer", customerID, "cu-", RegisterCustomer, "registered")
}

// refuseTicket is the guard of a workflow that moves a ticket to status:
// refused while the ticket is still being created, or once it is there.
func (s *Service) refuseTicket(ctx context.Context, ticketID, status string) error {
	if err := s.refuseWhileMaking(ctx, "ticket", ticketID, "tk-", CreateTicket, "created"); err != nil {
		return err
	}
	return s.refuseTicketIn(ctx, ticketID, status)
}

// refuseTicketIn refuses a workflow on a ticket already in status: it has
// been done.
func (s *Service) refuseTicketIn(ctx context.Context, ticketID, status string) error {
	var tk struct {
		Status string `json:"status"`
	}
	if err := s.ticket.Get(ctx, "/tickets/"+esc(ticketID), &tk); err != nil {
		return err
	}
	if tk.Status == status {
		return sysops.Errorf(sysops.EConflict, "ticket %q is already %s", ticketID, status)
	}
	return nil
}

// run begins the saga (idempotent by id) and answers with its outcome.
func (s *Service) run(w http.ResponseWriter, r *http.Request, definition, id string, in any, result func(saga.Saga) any) error {
	if _, err := s.orch.Begin(r.Context(), definition, id, in); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.Wait)
	defer cancel()
	sg, err := s.orch.Wait(ctx, id)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	switch sg.State {
	case saga.Committed:
		httpx.WriteJSON(w, http.StatusCreated, Outcome{SagaID: id, State: sg.State, Result: result(sg)})
	case saga.Compensated:
		return sysops.Errorf(sysops.EConflict, "%s (saga %s compensated)", sg.Reason, id)
	default:
		w.Header().Set("Location", "/sagas/"+id)
		httpx.WriteJSON(w, http.StatusAccepted, Outcome{SagaID: id, State: sg.State, Reason: sg.LastError})
	}
	return nil
}

func stepOutput(sg saga.Saga, step string) json.RawMessage {
	for _, st := range sg.Steps {
		if st.Name == step {
			return st.Output
		}
	}
	return nil
}

// Handler returns the service's HTTP API.
func (s *Service) Handler() http.Handler {
	rt := svc.NewRouter(s.logger)
	rt.Handle("POST /sagas/create-ticket", func(w http.ResponseWriter, r *http.Request) error {
		var in TicketRequest
		if err := httpx.DecodeJSON(w, r, &in); err != nil {
			return err
		}
		var c svc.Check
		c.Required("customer_id", in.CustomerID, 64)
		c.Required("description", in.Description, 4000)
		c.OneOf("priority", in.Priority, svc.Priorities...)
		c.OneOf("skill", in.Skill, svc.Skills...)
		c.Zip("zip", in.Zip)
		if in.TicketID != "" {
			c.Fail("field %q is chosen by the orchestrator", "ticket_id")
		}
		if err := c.Err(); err != nil {
			return err
		}
		// A repeat of a request that began its saga passes this too: a
		// registration that had ended then has ended for good.
		if err := s.refuseWhileRegistering(r.Context(), in.CustomerID); err != nil {
			return err
		}
		id := sagaID(r, CreateTicket)
		in.TicketID = "tk-" + id[len(CreateTicket)+1:]
		return s.run(w, r, CreateTicket, id, in, func(sg saga.Saga) any {
			return map[string]json.RawMessage{"ticket": stepOutput(sg, "mark-assigned"), "assignment": stepOutput(sg, "assign-expert")}
		})
	})
	rt.Handle("POST /sagas/register-customer", func(w http.ResponseWriter, r *http.Request) error {
		var in Registration
		if err := httpx.DecodeJSON(w, r, &in); err != nil {
			return err
		}
		var c svc.Check
		c.Required("name", in.Name, 200)
		c.Email("email", strings.ToLower(strings.TrimSpace(in.Email)))
		c.Zip("zip", in.Zip)
		c.OneOf("plan", in.Plan, "basic", "standard", "premium")
		if in.CustomerID != "" || in.ContractID != "" || in.AccountID != "" {
			c.Fail("the ids are chosen by the orchestrator")
		}
		if err := c.Err(); err != nil {
			return err
		}
		id := sagaID(r, RegisterCustomer)
		suffix := id[len(RegisterCustomer)+1:]
		in.CustomerID, in.ContractID, in.AccountID = "cu-"+suffix, "ct-"+suffix, "ba-"+suffix
		return s.run(w, r, RegisterCustomer, id, in, func(sg saga.Saga) any {
			return map[string]json.RawMessage{"customer": stepOutput(sg, "profile"), "contract": stepOutput(sg, "contract"),
				"billing_account": stepOutput(sg, "billing-account")}
		})
	})
	rt.Handle("POST /sagas/complete-ticket", func(w http.ResponseWriter, r *http.Request) error {
		var in Completion
		if err := httpx.DecodeJSON(w, r, &in); err != nil {
			return err
		}
		var c svc.Check
		c.Required("ticket_id", in.TicketID, 64)
		c.Required("notes", in.Notes, 4000)
		if err := c.Err(); err != nil {
			return err
		}
		id := sagaID(r, CompleteTicket)
		if err := s.unlessBegun(r.Context(), id, func() error { return s.refuseTicket(r.Context(), in.TicketID, "completed") }); err != nil {
			return err
		}
		return s.run(w, r, CompleteTicket, id, in, func(sg saga.Saga) any { return stepOutput(sg, "record-completion") })
	})
	rt.Handle("POST /sagas/cancel-plan", func(w http.ResponseWriter, r *http.Request) error {
		var in Cancellation
		if err := httpx.DecodeJSON(w, r, &in); err != nil {
			return err
		}
		var c svc.Check
		c.Required("customer_id", in.CustomerID, 64)
		c.Optional("reason", in.Reason, 500)
		if in.ContractID != "" || in.AccountID != "" {
			c.Fail("the contract and the account are found by the orchestrator")
		}
		if err := c.Err(); err != nil {
			return err
		}
		id := sagaID(r, CancelPlan)
		err := s.unlessBegun(r.Context(), id, func() error {
			if err := s.refuseWhileRegistering(r.Context(), in.CustomerID); err != nil {
				return err
			}
			var ks struct {
				Contracts []struct{ ID, Status string } `json:"contracts"`
			}
			if err := s.contract.Get(r.Context(), "/contracts?customer_id="+url.QueryEscape(in.CustomerID), &ks); err != nil {
				return err
			}
			for _, k := range ks.Contracts {
				if k.Status == "active" {
					in.ContractID = k.ID
				}
			}
			if in.ContractID == "" {
				return sysops.Errorf(sysops.EConflict, "customer %q has no active support plan", in.CustomerID)
			}
			return nil
		})
		if err != nil {
			return err
		}
		return s.run(w, r, CancelPlan, id, in, func(sg saga.Saga) any {
			return map[string]json.RawMessage{"contract": stepOutput(sg, "cancel-contract"), "billing_account": stepOutput(sg, "close-account"),
				"customer": stepOutput(sg, "profile")}
		})
	})
	rt.Handle("POST /sagas/cancel-ticket", func(w http.ResponseWriter, r *http.Request) error {
		var in TicketCancellation
		if err := httpx.DecodeJSON(w, r, &in); err != nil {
			return err
		}
		var c svc.Check
		c.Required("ticket_id", in.TicketID, 64)
		if err := c.Err(); err != nil {
			return err
		}
		id := sagaID(r, CancelTicket)
		if err := s.unlessBegun(r.Context(), id, func() error { return s.refuseTicket(r.Context(), in.TicketID, "cancelled") }); err != nil {
			return err
		}
		return s.run(w, r, CancelTicket, id, in, func(sg saga.Saga) any {
			return map[string]json.RawMessage{"ticket": stepOutput(sg, "cancel-ticket"), "assignment": stepOutput(sg, "release-expert")}
		})
	})
	rt.Handle("GET /sagas/{id}", func(w http.ResponseWriter, r *http.Request) error {
		sg, err := saga.Get(r.Context(), s.db, r.PathValue("id"))
		if errors.Is(err, saga.ErrNotFound) {
			return sysops.Errorf(sysops.ENotFound, "saga %q not found", r.PathValue("id"))
		}
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, sg)
		return nil
	})
	ops := saga.Handler("/ops/sagas", s.db, s.logger)
	rt.HandleHTTP("/ops/sagas", ops)
	rt.HandleHTTP("/ops/sagas/", ops)
	return rt
}
