// Package gateway is the public API of the Sysops Squad, under /api, as
// described by api/openapi.yaml. It owns no business table: it validates
// requests (a ticket's customer must be active and hold an active support
// plan, which it asks contract, the plan's owner), then runs each workflow
// as calls to the services that own the data, in one of two ways
// ([Config.Consistency]): as a saga in the orchestrator service (the
// default), or as plain sequential calls from the gateway, the baseline
// with no recovery from a failure part way. In the sequential way every
// call carries an Idempotency-Key derived from the client's, so a client
// retrying a failed workflow with its key repeats no step that was applied
// and finishes the rest. Nothing undoes a workflow that fails part way and
// is not retried: what it did stays.
//
// Under `sysops up` it listens on 127.0.0.1:8080.
package gateway

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/internal/host"
	"github.com/sysops-squad/sysops/internal/httpx"
	"github.com/sysops-squad/sysops/internal/svc"
	"github.com/sysops-squad/sysops/outbox"
)

// Name is the service's name.
const Name = "gateway"

// Consistency patterns for the cross-service workflows.
const (
	// Orchestrated runs workflows as sagas in the orchestrator service.
	Orchestrated = "orchestrated"
	// Sequential calls the owners one after another from the gateway,
	// with no recovery from a failure part way (the baseline).
	Sequential = "sequential"
)

// Consistencies lists the patterns the gateway supports.
var Consistencies = []string{Orchestrated, Sequential}

// Config configures the gateway.
type Config struct {
	// Consistency is how workflows keep the owners consistent; default
	// Orchestrated: create ticket, register customer, complete ticket,
	// cancel support plan and cancel ticket run as sagas.
	Consistency string
}

// Spec describes the service to its host.
func Spec() host.Spec { return SpecWith(Config{}) }

// SpecWith describes the gateway configured by cfg.
func SpecWith(cfg Config) host.Spec {
	cfg.Consistency = cmp.Or(cfg.Consistency, Orchestrated)
	return host.Spec{
		Name: Name, Streams: svc.Streams(Name),
		Start: func(ctx context.Context, deps host.Deps) (http.Handler, error) {
			if !slices.Contains(Consistencies, cfg.Consistency) {
				return nil, fmt.Errorf("consistency %q: want one of %s", cfg.Consistency, strings.Join(Consistencies, ", "))
			}
			g := New(deps.Peers, deps.Logger)
			g.cfg = cfg
			if deps.Broker != nil {
				g.dlq = deps.Broker.DeadLetterHandler("/api/ops/dlq", deps.Logger)
			}
			return g.Handler(), nil
		},
	}
}

// Gateway is the public API.
type Gateway struct {
	peers   svc.Peers
	clients map[string]*svc.Client
	cfg     Config
	dlq     http.Handler // the dead-letter stream's endpoints, on the broker the gateway is connected to
	logger  *slog.Logger
}

// New returns the gateway calling peers, orchestrated.
func New(peers svc.Peers, logger *slog.Logger) *Gateway {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	g := &Gateway{peers: peers, clients: map[string]*svc.Client{}, cfg: Config{Consistency: Orchestrated}, logger: logger}
	for _, p := range []string{"customer", "contract", "billing", "ticket", "assignment", "completion", "survey",
		"location", "audit", "reporting", "orchestrator"} {
		g.clients[p] = svc.NewClient(peers, p)
	}
	return g
}

func (g *Gateway) c(name string) *svc.Client { return g.clients[name] }

// Registration is the body of POST /api/customers.
type Registration struct {
	Name  string `json:"name"`
	Email string `json:"email"`
	Zip   string `json:"zip"`
	Plan  string `json:"plan"`
}

// checkZip fails with an error naming field when location does not know zip.
func (g *Gateway) checkZip(ctx context.Context, field, zip string) error {
	err := g.c("location").Get(ctx, "/zipcodes/"+url.PathEscape(zip), nil)
	if sysops.CodeOf(err) == sysops.ENotFound {
		return sysops.Errorf(sysops.EInvalid, "field %q: unknown zip code %q", field, zip)
	}
	return err
}

func (g *Gateway) register(ctx context.Context, in Registration) (map[string]any, error) {
	if err := g.checkRegistration(ctx, in); err != nil {
		return nil, err
	}
	var cust, contract, account map[string]any
	// The same steps as the register-customer saga, the profile showing
	// its plan included; only what happens on a failure differs.
	if err := g.c("customer").Post(ctx, "/customers", map[string]string{"name": in.Name, "email": in.Email, "zip": in.Zip,
		"support_plan": in.Plan}, &cust); err != nil {
		return nil, err
	}
	id, _ := cust["id"].(string)
	if err := g.c("contract").Post(ctx, "/contracts", map[string]string{"customer_id": id, "plan": in.Plan}, &contract); err != nil {
		return nil, err
	}
	if err := g.c("billing").Post(ctx, "/accounts", map[string]string{"customer_id": id, "plan": in.Plan}, &account); err != nil {
		return nil, err
	}
	return map[string]any{"customer": cust, "contract": contract, "billing_account": account}, nil
}

// activeContract returns a customer's active contract, or nil.
func (g *Gateway) activeContract(ctx context.Context, customerID string) (map[string]any, error) {
	active, _, err := g.contracts(ctx, customerID)
	return active, err
}

// contracts returns a customer's active contract and newest one (nil
// when there is none).
func (g *Gateway) contracts(ctx context.Context, customerID string) (active, newest map[string]any, err error) {
	var list struct {
		Contracts []map[string]any `json:"contracts"`
	}
	if err := g.c("contract").Get(ctx, "/contracts?customer_id="+url.QueryEscape(customerID), &list); err != nil {
		return nil, nil, err
	}
	for _, k := range list.Contracts {
		if k["status"] == "active" {
			active = k
		}
	}
	if len(list.Contracts) > 0 {
		newest = list.Contracts[0]
	}
	return active, newest, nil
}

func (g *Gateway) customer(ctx context.Context, id string) (map[string]any, error) {
	var cust map[string]any
	if err := g.c("customer").Get(ctx, "/customers/"+url.PathEscape(id), &cust); err != nil {
		return nil, err
	}
	k, err := g.activeContract(ctx, id)
	if err != nil {
		return nil, err
	}
	cust["plan"], cust["contract_id"] = nil, nil
	if k != nil {
		cust["plan"], cust["contract_id"] = k["plan"], k["id"]
	}
	return cust, nil
}

func (g *Gateway) cancelPlan(ctx context.Context, customerID, reason string) (map[string]any, error) {
	var c svc.Check
	c.Optional("reason", reason, 500)
	if err := c.Err(); err != nil {
		return nil, err
	}
	if err := g.c("customer").Get(ctx, "/customers/"+url.PathEscape(customerID), nil); err != nil {
		return nil, err
	}
	k, newest, err := g.contracts(ctx, customerID)
	if err != nil {
		return nil, err
	}
	noPlan := sysops.Errorf(sysops.EConflict, "customer %q has no active support plan", customerID)
	retried := false
	if k == nil {
		// This request, repeated with its key after a failure part way,
		// finds the plan it cancelled itself: it carries on from there
		// (the contract says whose cancellation it was).
		if newest == nil || newest["status"] != "cancelled" {
			return nil, noPlan
		}
		k, retried = newest, true
	}
	kid, _ := k["id"].(string)
	// The op id names this request's cancellation, so that of two racing
	// requests one cancels and the other is refused.
	op := "cancel-plan/" + cmp.Or(svc.IdempotencyKey(ctx), outbox.NewID())
	var cancelled, account map[string]any
	if err := g.c("contract").Post(ctx, "/contracts/"+url.PathEscape(kid)+"/cancel", map[string]string{"reason": reason, "op_id": op}, &cancelled); err != nil {
		if retried && sysops.CodeOf(err) == sysops.EConflict {
			return nil, noPlan // another request cancelled it
		}
		return nil, err
	}
	if err := g.c("billing").Get(ctx, "/accounts?customer_id="+url.QueryEscape(customerID), &account); err != nil {
		return nil, err
	}
	aid, _ := account["id"].(string)
	if account["status"] == "open" {
		if err := g.c("billing").Post(ctx, "/accounts/"+url.PathEscape(aid)+"/close", nil, &account); err != nil {
			return nil, err
		}
	}
	// As the cancel-plan saga's last step: the profile shows no plan.
	var cust map[string]any
	if err := g.c("customer").Post(ctx, "/customers/"+url.PathEscape(customerID)+"/support-plan", map[string]string{"plan": ""}, &cust); err != nil {
		return nil, err
	}
	return map[string]any{"contract": cancelled, "billing_account": account, "customer": cust}, nil
}

// NewTicket is the body of POST /api/tickets.
type NewTicket struct {
	CustomerID  string `json:"customer_id"`
	Description string `json:"description"`
	Priority    string `json:"priority"`
	Skill       string `json:"skill"`
	Zip         string `json:"zip"`
}

// runSaga runs a workflow as a saga in the orchestrator: status with
// shape(result) when it commits, the orchestrator's 409 naming the reason
// when it compensates, 202 with the saga id while it runs on.
func (g *Gateway) runSaga(w http.ResponseWriter, r *http.Request, path string, in any, status int,
	shape func(result map[string]any, sagaID, state string) any) error {
	var out struct {
		SagaID string         `json:"saga_id"`
		State  string         `json:"state"`
		Reason string         `json:"reason,omitempty"`
		Result map[string]any `json:"result"`
	}
	code, err := g.c("orchestrator").PostStatus(r.Context(), path, in, &out)
	if err != nil {
		return err
	}
	if code == http.StatusAccepted {
		w.Header().Set("Location", "/api/sagas/"+out.SagaID)
		httpx.WriteJSON(w, http.StatusAccepted, map[string]any{"saga_id": out.SagaID, "state": out.State, "reason": out.Reason})
		return nil
	}
	if out.Result == nil {
		out.Result = map[string]any{}
	}
	httpx.WriteJSON(w, status, shape(out.Result, out.SagaID, out.State))
	return nil
}

// begun reports whether a check that refused a request (err, a conflict)
// should be passed over because this request began its saga already: it
// is a repeat, with its Idempotency-Key, of one whose answer was lost, and
// what the check refuses now (a plan cancelled since) may be the state
// after it. The saga's outcome is then the answer. Only a refusal costs
// this look-up.
func (g *Gateway) begun(ctx context.Context, err error, definition, path string) bool {
	key := svc.IdempotencyKey(ctx)
	if key == "" || sysops.CodeOf(err) != sysops.EConflict {
		return false
	}
	id := svc.SagaID(definition, svc.PeerKey(key, "orchestrator", path))
	return g.c("orchestrator").Get(ctx, "/sagas/"+url.PathEscape(id), nil) == nil
}

// checkRegistration validates a registration at the edge.
func (g *Gateway) checkRegistration(ctx context.Context, in Registration) error {
	var c svc.Check
	c.Required("name", in.Name, 200)
	c.Email("email", strings.ToLower(strings.TrimSpace(in.Email)))
	c.Zip("zip", in.Zip)
	c.OneOf("plan", in.Plan, "basic", "standard", "premium")
	if err := c.Err(); err != nil {
		return err
	}
	return g.checkZip(ctx, "zip", in.Zip)
}

// checkTicket validates a new ticket at the edge, the customer included.
func (g *Gateway) checkTicket(ctx context.Context, in NewTicket) error {
	var c svc.Check
	c.Required("customer_id", in.CustomerID, 64)
	c.Required("description", in.Description, 4000)
	c.OneOf("priority", in.Priority, svc.Priorities...)
	c.OneOf("skill", in.Skill, svc.Skills...)
	c.Zip("zip", in.Zip)
	if err := c.Err(); err != nil {
		return err
	}
	var cust struct {
		Status string `json:"status"`
	}
	err := g.c("customer").Get(ctx, "/customers/"+url.PathEscape(in.CustomerID), &cust)
	if sysops.CodeOf(err) == sysops.ENotFound {
		return sysops.Errorf(sysops.EInvalid, "field \"customer_id\": unknown customer %q", in.CustomerID)
	}
	if err != nil {
		return err
	}
	if err := g.checkZip(ctx, "zip", in.Zip); err != nil {
		return err
	}
	return g.checkSupported(ctx, in.CustomerID, cust.Status)
}

// checkSupported refuses a ticket from a customer who has no support plan:
// a closed profile, or no active contract (never had one, or cancelled
// it). Contract owns the plan, so it is asked, not the profile's copy.
// The answer is as of this read: a plan cancelled while the ticket is
// being created is cancelled after it, as if the ticket had come first.
func (g *Gateway) checkSupported(ctx context.Context, customerID, status string) error {
	if status != "active" {
		return sysops.Errorf(sysops.EConflict, "customer %q is %s: a ticket needs an active customer with a support plan", customerID, status)
	}
	k, err := g.activeContract(ctx, customerID)
	if err != nil {
		return err
	}
	if k == nil {
		return sysops.Errorf(sysops.EConflict, "customer %q has no active support plan: a ticket needs one", customerID)
	}
	return nil
}

func (g *Gateway) createTicket(ctx context.Context, in NewTicket) (map[string]any, error) {
	if err := g.checkTicket(ctx, in); err != nil {
		return nil, err
	}
	var tk map[string]any
	if err := g.c("ticket").Post(ctx, "/tickets", in, &tk); err != nil {
		return nil, err
	}
	id, _ := tk["id"].(string)
	if err := g.c("customer").Post(ctx, "/customers/"+url.PathEscape(in.CustomerID)+"/open-tickets", map[string]int{"delta": 1}, nil); err != nil {
		return nil, err
	}
	var asg map[string]any
	err := g.c("assignment").Post(ctx, "/assignments", map[string]string{"ticket_id": id, "skill": in.Skill, "zip": in.Zip,
		"priority": in.Priority}, &asg)
	if sysops.CodeOf(err) == sysops.EConflict {
		// No expert free: the ticket waits, open, for one.
		return map[string]any{"ticket": tk, "assignment": nil, "note": sysops.MessageOf(err)}, nil
	}
	if err != nil {
		return nil, err
	}
	if err := g.c("ticket").Post(ctx, "/tickets/"+url.PathEscape(id)+"/status", map[string]string{"status": "assigned"}, &tk); err != nil {
		return nil, err
	}
	return map[string]any{"ticket": tk, "assignment": asg}, nil
}

// cancelTicket cancels an open or assigned ticket: the ticket, then its
// assignment (freeing the expert), then the customer's count.
func (g *Gateway) cancelTicket(ctx context.Context, id string) (map[string]any, error) {
	// The ticket refuses a cancel of a ticket cancelled by another
	// request, so of two racing cancels one counts the ticket down; this
	// request repeated with its key is replayed, and finishes the rest.
	var tk map[string]any
	if err := g.c("ticket").Post(ctx, "/tickets/"+url.PathEscape(id)+"/status", map[string]string{"status": "cancelled"}, &tk); err != nil {
		return nil, err
	}
	err := g.c("assignment").Post(ctx, "/assignments/"+url.PathEscape(id)+"/release", nil, nil)
	if err != nil && sysops.CodeOf(err) != sysops.ENotFound {
		return nil, err
	}
	customerID, _ := tk["customer_id"].(string)
	if err := g.c("customer").Post(ctx, "/customers/"+url.PathEscape(customerID)+"/open-tickets", map[string]int{"delta": -1}, nil); err != nil {
		return nil, err
	}
	return g.ticket(ctx, id)
}

func (g *Gateway) ticket(ctx context.Context, id string) (map[string]any, error) {
	var tk map[string]any
	if err := g.c("ticket").Get(ctx, "/tickets/"+url.PathEscape(id), &tk); err != nil {
		return nil, err
	}
	var asg map[string]any
	err := g.c("assignment").Get(ctx, "/assignments/"+url.PathEscape(id), &asg)
	if err != nil && sysops.CodeOf(err) != sysops.ENotFound {
		return nil, err
	}
	return map[string]any{"ticket": tk, "assignment": asg}, nil
}

// forward answers with what peer answers to GET path (the query string
// passed on), or its error.
func (g *Gateway) forward(peer, path string) httpx.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		p := path
		for _, name := range []string{"id", "zip"} {
			p = strings.ReplaceAll(p, "{"+name+"}", url.PathEscape(r.PathValue(name)))
		}
		if r.URL.RawQuery != "" {
			p += "?" + r.URL.RawQuery
		}
		var raw json.RawMessage
		if err := g.c(peer).Get(r.Context(), p, &raw); err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, raw)
		return nil
	}
}

// services reports every service's readiness.
func (g *Gateway) services(ctx context.Context) map[string]any {
	names := g.peers.Names()
	out := map[string]any{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 3 * time.Second}
	for _, n := range names {
		wg.Go(func() {
			entry := map[string]any{"url": g.peers.URL(n), "ready": false}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.peers.URL(n)+"/readyz", nil)
			if resp, err := client.Do(req); err != nil {
				entry["error"] = err.Error()
			} else {
				resp.Body.Close()
				entry["ready"] = resp.StatusCode == http.StatusOK
				entry["status"] = resp.StatusCode
			}
			mu.Lock()
			out[n] = entry
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// Handler returns the public API.
func (g *Gateway) Handler() http.Handler {
	rt := svc.NewRouter(g.logger)
	created := func(fn func(r *http.Request) (map[string]any, error)) httpx.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) error {
			out, err := fn(r)
			if err != nil {
				return err
			}
			httpx.WriteJSON(w, http.StatusCreated, out)
			return nil
		}
	}
	ok := func(fn func(r *http.Request) (map[string]any, error)) httpx.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) error {
			out, err := fn(r)
			if err != nil {
				return err
			}
			httpx.WriteJSON(w, http.StatusOK, out)
			return nil
		}
	}
	decode := func(w http.ResponseWriter, r *http.Request, v any) error { return httpx.DecodeJSON(w, r, v) }

	rt.Handle("POST /api/customers", func(w http.ResponseWriter, r *http.Request) error {
		var in Registration
		if err := decode(w, r, &in); err != nil {
			return err
		}
		if g.cfg.Consistency == Orchestrated {
			if err := g.checkRegistration(r.Context(), in); err != nil {
				return err
			}
			return g.runSaga(w, r, "/sagas/register-customer", in, http.StatusCreated, func(res map[string]any, id, state string) any {
				return map[string]any{"customer": res["customer"], "contract": res["contract"], "billing_account": res["billing_account"],
					"saga_id": id, "state": state}
			})
		}
		return created(func(r *http.Request) (map[string]any, error) { return g.register(r.Context(), in) })(w, r)
	})
	rt.Handle("GET /api/customers/{id}", ok(func(r *http.Request) (map[string]any, error) {
		return g.customer(r.Context(), r.PathValue("id"))
	}))
	rt.Handle("POST /api/customers/{id}/cancel-plan", func(w http.ResponseWriter, r *http.Request) error {
		var in struct {
			Reason string `json:"reason"`
		}
		if err := decode(w, r, &in); err != nil {
			return err
		}
		if g.cfg.Consistency == Orchestrated {
			if err := g.c("customer").Get(r.Context(), "/customers/"+url.PathEscape(r.PathValue("id")), nil); err != nil {
				return err
			}
			body := map[string]string{"customer_id": r.PathValue("id"), "reason": in.Reason}
			return g.runSaga(w, r, "/sagas/cancel-plan", body, http.StatusOK, func(res map[string]any, id, state string) any {
				return map[string]any{"contract": res["contract"], "billing_account": res["billing_account"], "saga_id": id, "state": state}
			})
		}
		return ok(func(r *http.Request) (map[string]any, error) {
			return g.cancelPlan(r.Context(), r.PathValue("id"), in.Reason)
		})(w, r)
	})
	rt.Handle("GET /api/customers/{id}/tickets", func(w http.ResponseWriter, r *http.Request) error {
		if err := g.c("customer").Get(r.Context(), "/customers/"+url.PathEscape(r.PathValue("id")), nil); err != nil {
			return err
		}
		q := r.URL.Query()
		q.Set("customer_id", r.PathValue("id"))
		var raw json.RawMessage
		if err := g.c("ticket").Get(r.Context(), "/tickets?"+q.Encode(), &raw); err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, raw)
		return nil
	}, "status", "limit")
	rt.Handle("POST /api/tickets", func(w http.ResponseWriter, r *http.Request) error {
		var in NewTicket
		if err := decode(w, r, &in); err != nil {
			return err
		}
		if g.cfg.Consistency == Orchestrated {
			const path = "/sagas/create-ticket"
			// "create-ticket" is the orchestrator's name of the workflow.
			if err := g.checkTicket(r.Context(), in); err != nil && !g.begun(r.Context(), err, "create-ticket", path) {
				return err
			}
			return g.runSaga(w, r, path, in, http.StatusCreated, func(res map[string]any, id, state string) any {
				return map[string]any{"ticket": res["ticket"], "assignment": res["assignment"], "saga_id": id, "state": state}
			})
		}
		return created(func(r *http.Request) (map[string]any, error) { return g.createTicket(r.Context(), in) })(w, r)
	})
	rt.HandleForward("GET /api/sagas/{id}", g.forward("orchestrator", "/sagas/{id}"))
	rt.HandleForward("GET /api/ops/sagas", g.forward("orchestrator", "/ops/sagas"))
	for _, action := range []string{"retry", "skip", "resolve", "cancel"} {
		rt.Handle("POST /api/ops/sagas/{id}/"+action, func(w http.ResponseWriter, r *http.Request) error {
			body := map[string]string{}
			if r.ContentLength != 0 {
				if err := decode(w, r, &body); err != nil {
					return err
				}
			}
			var out json.RawMessage
			if err := g.c("orchestrator").Post(r.Context(), "/ops/sagas/"+url.PathEscape(r.PathValue("id"))+"/"+action, body, &out); err != nil {
				return err
			}
			httpx.WriteJSON(w, http.StatusOK, out)
			return nil
		})
	}
	rt.Handle("POST /api/ops/sagas/{id}/{action}", func(w http.ResponseWriter, r *http.Request) error {
		return sysops.Errorf(sysops.EInvalid, "unknown saga action %q: retry, skip, resolve or cancel", r.PathValue("action"))
	})
	rt.Handle("GET /api/tickets/{id}", ok(func(r *http.Request) (map[string]any, error) {
		return g.ticket(r.Context(), r.PathValue("id"))
	}))
	rt.Handle("POST /api/tickets/{id}/cancel", func(w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("id")
		if g.cfg.Consistency != Orchestrated {
			return ok(func(r *http.Request) (map[string]any, error) { return g.cancelTicket(r.Context(), id) })(w, r)
		}
		view, err := g.ticket(r.Context(), id)
		if err != nil {
			return err
		}
		if tk, _ := view["ticket"].(map[string]any); tk["status"] == "cancelled" {
			httpx.WriteJSON(w, http.StatusOK, view) // cancelling twice is cancelling once
			return nil
		}
		return g.runSaga(w, r, "/sagas/cancel-ticket", map[string]string{"ticket_id": id}, http.StatusOK,
			func(_ map[string]any, sagaID, state string) any {
				view, err := g.ticket(r.Context(), id)
				if err != nil {
					return map[string]any{"saga_id": sagaID, "state": state}
				}
				view["saga_id"], view["state"] = sagaID, state
				return view
			})
	})
	rt.Handle("POST /api/tickets/{id}/complete", func(w http.ResponseWriter, r *http.Request) error {
		var in struct {
			Notes string `json:"notes"`
		}
		if err := decode(w, r, &in); err != nil {
			return err
		}
		var c svc.Check
		c.Required("notes", in.Notes, 4000)
		if err := c.Err(); err != nil {
			return err
		}
		if g.cfg.Consistency == Orchestrated {
			body := map[string]string{"ticket_id": r.PathValue("id"), "notes": in.Notes}
			return g.runSaga(w, r, "/sagas/complete-ticket", body, http.StatusOK, func(res map[string]any, id, state string) any {
				res["saga_id"], res["state"] = id, state
				return res
			})
		}
		var out map[string]any
		if err := g.c("completion").Post(r.Context(), "/completions", map[string]string{"ticket_id": r.PathValue("id"), "notes": in.Notes}, &out); err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, out)
		return nil
	})
	rt.HandleForward("GET /api/zipcodes/{zip}", g.forward("location", "/zipcodes/{zip}"))
	rt.HandleForward("GET /api/zipcodes", g.forward("location", "/zipcodes"))
	rt.HandleForward("GET /api/experts", g.forward("assignment", "/experts"))
	rt.Handle("POST /api/experts", func(w http.ResponseWriter, r *http.Request) error {
		var in struct {
			Name     string   `json:"name"`
			Email    string   `json:"email"`
			Skills   []string `json:"skills"`
			Zip      string   `json:"zip"`
			Capacity int      `json:"capacity"`
		}
		if err := decode(w, r, &in); err != nil {
			return err
		}
		var out map[string]any
		if err := g.c("assignment").Post(r.Context(), "/experts", in, &out); err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusCreated, out)
		return nil
	})
	rt.HandleForward("GET /api/audit", g.forward("audit", "/audit"))
	rt.HandleForward("GET /api/surveys", g.forward("survey", "/surveys"))
	rt.Handle("POST /api/surveys/{id}/response", func(w http.ResponseWriter, r *http.Request) error {
		var in struct {
			Rating  int    `json:"rating"`
			Comment string `json:"comment"`
		}
		if err := decode(w, r, &in); err != nil {
			return err
		}
		var out map[string]any
		if err := g.c("survey").Post(r.Context(), "/surveys/"+url.PathEscape(r.PathValue("id"))+"/response", in, &out); err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, out)
		return nil
	})
	rt.HandleForward("GET /api/reports/summary", g.forward("reporting", "/reports/summary"))
	rt.HandleForward("GET /api/reports/customers/{id}", g.forward("reporting", "/reports/customers/{id}"))
	rt.Handle("GET /api/ops/services", func(w http.ResponseWriter, r *http.Request) error {
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"services": g.services(r.Context())})
		return nil
	})
	rt.HandleForward("/api/ops/outbox/{service}/{rest...}", g.opsProxy("outbox"))
	rt.HandleForward("/api/ops/outbox/{service}", g.opsProxy("outbox"))
	rt.HandleForward("/api/ops/inbox/{service}/{rest...}", g.opsProxy("inbox"))
	if g.dlq != nil {
		rt.HandleHTTP("/api/ops/dlq", g.dlq)
		rt.HandleHTTP("/api/ops/dlq/", g.dlq)
	}
	return rt
}

// errNotServed: the service behind an ops proxy has no route for the
// request.
var errNotServed = errors.New("not served")

// opsProxy passes /api/ops/{kind}/{service}/... to that service's
// /ops/{kind}/... endpoints (kind: outbox or inbox).
func (g *Gateway) opsProxy(kind string) func(w http.ResponseWriter, r *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error { return g.proxyOps(w, r, kind) }
}

func (g *Gateway) proxyOps(w http.ResponseWriter, r *http.Request, kind string) error {
	name := r.PathValue("service")
	base := g.peers.URL(name)
	if base == "" && name != Name {
		return sysops.Errorf(sysops.ENotFound, "no service named %q", name)
	}
	if name == Name {
		return sysops.Errorf(sysops.EInvalid, "the gateway's own %s is at /ops/%s", kind, kind)
	}
	target, err := url.Parse(base)
	if err != nil {
		return err
	}
	rest := r.PathValue("rest")
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.URL.Path = strings.TrimSuffix("/ops/"+kind+"/"+rest, "/")
			pr.Out.URL.RawPath = ""
		},
		// A service that has no such endpoint (no inbox, say) answers
		// with its router's "no route", which names its own path; say
		// what that means here instead.
		ModifyResponse: func(resp *http.Response) error {
			if resp.StatusCode == http.StatusNotFound && resp.Header.Get(httpx.NoRouteHeader) != "" {
				return errNotServed
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, errNotServed) {
				msg := fmt.Sprintf("service %q does not serve %s /ops/%s", name, r.Method, strings.TrimSuffix(kind+"/"+rest, "/"))
				if kind == "inbox" {
					msg += " (only a service that consumes events has an inbox)"
				}
				httpx.WriteError(w, r, g.logger, sysops.Errorf(sysops.ENotFound, "%s", msg))
				return
			}
			httpx.WriteError(w, r, g.logger, sysops.Errorf(sysops.EUnavailable, "%s service unavailable: %v", name, err))
		},
	}
	proxy.ServeHTTP(w, r)
	return nil
}
