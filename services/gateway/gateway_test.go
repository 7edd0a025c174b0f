package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/sysops-squad/sysops/api"
	"github.com/sysops-squad/sysops/idempotency"
	"github.com/sysops-squad/sysops/internal/invariant"
	"github.com/sysops-squad/sysops/internal/svctest"
	"github.com/sysops-squad/sysops/natsjs"
	"github.com/sysops-squad/sysops/natsjs/brokertest"
	"github.com/sysops-squad/sysops/services/assignment"
	"github.com/sysops-squad/sysops/services/audit"
	"github.com/sysops-squad/sysops/services/billing"
	"github.com/sysops-squad/sysops/services/completion"
	"github.com/sysops-squad/sysops/services/contract"
	"github.com/sysops-squad/sysops/services/customer"
	"github.com/sysops-squad/sysops/services/gateway"
	"github.com/sysops-squad/sysops/services/location"
	"github.com/sysops-squad/sysops/services/orchestrator"
	"github.com/sysops-squad/sysops/services/reporting"
	"github.com/sysops-squad/sysops/services/survey"
	"github.com/sysops-squad/sysops/services/ticket"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

// contract checks every exchange with the gateway against api/openapi.yaml.
type contractChecker struct {
	t      *testing.T
	base   string
	router routers.Router
	seen   map[string]bool
}

func newChecker(t *testing.T, base string) *contractChecker {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(api.OpenAPI)
	if err != nil {
		t.Fatalf("api/openapi.yaml: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("api/openapi.yaml is not valid OpenAPI: %v", err)
	}
	doc.Servers = openapi3.Servers{{URL: base}}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return &contractChecker{t: t, base: base, router: router, seen: map[string]bool{}}
}

// do sends a request to the gateway, checks the request (unless it is
// meant to be invalid) and the response against the spec, and returns the
// response.
func (c *contractChecker) do(method, path string, body any, wantInvalid bool, headers ...string) svctest.Response {
	c.t.Helper()
	var req *http.Request
	var err error
	if body == nil {
		req, err = http.NewRequest(method, c.base+path, nil)
	} else {
		req, err = http.NewRequest(method, c.base+path, strings.NewReader(body.(string)))
		req.Header.Set("Content-Type", "application/json")
	}
	if err != nil {
		c.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	r := svctest.Do(c.t, method, c.base+path, body, headers...)
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		c.t.Errorf("%s %s is not in api/openapi.yaml: %v", method, path, err)
		return r
	}
	c.seen[route.Operation.OperationID] = true
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	if !wantInvalid {
		if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
			c.t.Errorf("%s %s: request does not match the spec: %v", method, path, err)
		}
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: r.Status, Header: r.Header,
		Body: io.NopCloser(bytes.NewReader(r.Body)), Options: &openapi3filter.Options{IncludeResponseStatus: true}}
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		c.t.Errorf("%s %s: response %d %s does not match the spec: %v", method, path, r.Status, r.Body, err)
	}
	return r
}

func TestPublicAPI(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		fast := 50 * time.Millisecond
		env := svctest.New(t, d, location.Spec(), customer.Spec(), contract.Spec(), billing.Spec(),
			ticket.SpecWith(ticket.Config{ZipRefresh: fast}), assignment.SpecWith(assignment.Config{ZipRefresh: fast}),
			completion.Spec(), survey.Spec(), audit.Spec(), reporting.Spec(), orchestrator.Spec(), gateway.Spec())
		c := newChecker(t, env.URL(gateway.Name))

		// Register, with an Idempotency-Key repeated.
		reg := `{"name":"Ada Lovelace","email":"ada@example.com","zip":"10001","plan":"premium"}`
		r := c.do("POST", "/api/customers", reg, false, "Idempotency-Key", "reg-ada")
		if r.Status != 201 {
			t.Fatalf("register: %d %s", r.Status, r.Body)
		}
		again := c.do("POST", "/api/customers", reg, false, "Idempotency-Key", "reg-ada")
		if again.Status != 201 || !bytes.Equal(again.Body, r.Body) || again.Header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("repeated registration: %d %s", again.Status, again.Body)
		}
		// The longest key a client may send reaches the orchestrator as a
		// key it accepts.
		long := `{"name":"Ada Long","email":"ada.long@example.com","zip":"10001","plan":"basic"}`
		if r := c.do("POST", "/api/customers", long, false, "Idempotency-Key", strings.Repeat("k", idempotency.MaxKeyLength)); r.Status != 201 {
			t.Errorf("register with a key of %d characters: %d %s", idempotency.MaxKeyLength, r.Status, r.Body)
		}
		var res struct {
			Customer struct{ ID string }
			Contract struct{ Plan string }
		}
		r.Decode(t, &res)
		cust := res.Customer.ID
		if res.Contract.Plan != "premium" {
			t.Errorf("contract plan = %q", res.Contract.Plan)
		}
		var list struct{ Customers []customer.Customer }
		svctest.Do(t, "GET", env.URL(customer.Name)+"/customers?email=ada@example.com", nil).Decode(t, &list)
		if len(list.Customers) != 1 {
			t.Errorf("%d customers registered, want 1", len(list.Customers))
		}
		svctest.WantError(t, "same key, other body", c.do("POST", "/api/customers",
			`{"name":"Bob","email":"bob@example.com","zip":"10001","plan":"basic"}`, true, "Idempotency-Key", "reg-ada"), 422, "different request")
		svctest.WantError(t, "email taken", c.do("POST", "/api/customers", reg, false), 409, "already registered")

		// Validation at the edge.
		for _, bad := range []struct{ name, body, want string }{
			{"unknown zip", `{"name":"B","email":"b@example.com","zip":"00000","plan":"basic"}`, `"zip"`},
			{"bad plan", `{"name":"B","email":"b@example.com","zip":"10001","plan":"gold"}`, `"plan"`},
			{"unknown field", `{"name":"B","email":"b@example.com","zip":"10001","plan":"basic","vip":1}`, `"vip"`},
			{"wrong type", `{"name":"B","email":"b@example.com","zip":10001,"plan":"basic"}`, `"zip"`},
			{"oversized", `{"name":"` + strings.Repeat("x", 1<<20) + `"}`, "exceeds"},
			{"not JSON", `name=B`, "malformed JSON"},
			// PostgreSQL's text holds neither; its refusal would be a 500.
			{"NUL in a name", `{"name":"B\u0000","email":"b@example.com","zip":"10001","plan":"basic"}`, `field "name" contains the NUL character`},
			{"not UTF-8", "{\"name\":\"B\xff\",\"email\":\"b@example.com\",\"zip\":\"10001\",\"plan\":\"basic\"}", "not valid UTF-8"},
		} {
			svctest.WantError(t, bad.name, c.do("POST", "/api/customers", bad.body, true), 400, bad.want)
		}
		svctest.WantError(t, "NUL in a path", c.do("GET", "/api/customers/a%00b", nil, true), 400, "contains the NUL character")
		svctest.WantError(t, "NUL in a query", c.do("GET", "/api/audit?entity_type=a%00", nil, true), 400, `"entity_type" contains the NUL character`)

		// Experts, then a ticket: assigned to the nearest with the skill.
		for i, zip := range []string{"07030", "60601"} {
			body := fmt.Sprintf(`{"name":"Expert %d","email":"e%d@sysops.example","skills":["printer","network"],"zip":%q,"capacity":3}`, i, i, zip)
			if r := c.do("POST", "/api/experts", body, false); r.Status != 201 {
				t.Fatalf("add expert: %d %s", r.Status, r.Body)
			}
		}
		c.do("GET", "/api/experts", nil, false)
		r = c.do("POST", "/api/tickets", fmt.Sprintf(`{"customer_id":%q,"description":"printer on fire","priority":"critical","skill":"printer","zip":"10002"}`, cust), false)
		if r.Status != 201 {
			t.Fatalf("create ticket: %d %s", r.Status, r.Body)
		}
		var tv struct {
			Ticket     struct{ ID, Status string }
			Assignment struct {
				Expert struct{ Zip string }
			}
			SagaID string `json:"saga_id"`
		}
		r.Decode(t, &tv)
		if tv.Ticket.Status != "assigned" || tv.Assignment.Expert.Zip != "07030" || tv.SagaID == "" {
			t.Errorf("ticket view = %+v, want assigned to the Hoboken expert by a saga", tv)
		}
		c.do("GET", "/api/sagas/"+tv.SagaID, nil, false)
		c.do("GET", "/api/ops/sagas?state=committed", nil, false)
		svctest.WantError(t, "retry a committed saga", c.do("POST", "/api/ops/sagas/"+tv.SagaID+"/retry", `{}`, false), 409, "not needs_attention")
		// A ticket no expert can take: the saga compensates, and says why.
		svctest.WantError(t, "no mobile expert", c.do("POST", "/api/tickets", fmt.Sprintf(`{"customer_id":%q,"description":"phone","priority":"low","skill":"mobile","zip":"10001"}`, cust), false), 409, "mobile")
		tid := tv.Ticket.ID
		for _, bad := range []struct{ name, body, want string }{
			{"unknown customer", `{"customer_id":"nobody","description":"x","priority":"low","skill":"printer","zip":"10001"}`, `"customer_id"`},
			{"bad priority", fmt.Sprintf(`{"customer_id":%q,"description":"x","priority":"asap","skill":"printer","zip":"10001"}`, cust), `"priority"`},
			{"unknown zip", fmt.Sprintf(`{"customer_id":%q,"description":"x","priority":"low","skill":"printer","zip":"00000"}`, cust), `"zip"`},
		} {
			svctest.WantError(t, bad.name, c.do("POST", "/api/tickets", bad.body, true), 400, bad.want)
		}

		var cv struct {
			OpenTickets int    `json:"open_tickets"`
			Plan        string `json:"plan"`
		}
		c.do("GET", "/api/customers/"+cust, nil, false).Decode(t, &cv)
		if cv.OpenTickets != 1 || cv.Plan != "premium" {
			t.Errorf("customer view = %+v, want 1 open ticket on premium", cv)
		}
		c.do("GET", "/api/tickets/"+tid, nil, false)
		c.do("GET", "/api/customers/"+cust+"/tickets?status=assigned", nil, false)
		svctest.WantError(t, "unknown ticket", c.do("GET", "/api/tickets/nope", nil, false), 404, "nope")

		// A second ticket, cancelled: the expert and the count are freed.
		r = c.do("POST", "/api/tickets", fmt.Sprintf(`{"customer_id":%q,"description":"slow wifi","priority":"low","skill":"network","zip":"10001"}`, cust), false)
		var second struct{ Ticket struct{ ID string } }
		r.Decode(t, &second)
		r = c.do("POST", "/api/tickets/"+second.Ticket.ID+"/cancel", nil, false)
		var cancelled struct {
			Ticket     struct{ Status string }
			Assignment struct{ Status string }
		}
		r.Decode(t, &cancelled)
		if r.Status != 200 || cancelled.Ticket.Status != "cancelled" || cancelled.Assignment.Status != "released" {
			t.Errorf("cancel ticket: %d %s", r.Status, r.Body)
		}
		if r := c.do("POST", "/api/tickets/"+second.Ticket.ID+"/cancel", nil, false); r.Status != 200 {
			t.Errorf("cancel again: %d %s", r.Status, r.Body)
		}

		// Complete the first: the survey is sent by delegation.
		r = c.do("POST", "/api/tickets/"+tid+"/complete", `{"notes":"replaced the fuser"}`, false)
		if r.Status != 200 {
			t.Fatalf("complete: %d %s", r.Status, r.Body)
		}
		var surveys struct {
			Surveys []struct{ ID string }
		}
		c.do("GET", "/api/surveys?customer_id="+cust, nil, false).Decode(t, &surveys)
		if len(surveys.Surveys) != 1 {
			t.Fatalf("surveys = %+v", surveys)
		}
		c.do("POST", "/api/surveys/"+surveys.Surveys[0].ID+"/response", `{"rating":5,"comment":"fast"}`, false)
		c.do("GET", "/api/customers/"+cust, nil, false).Decode(t, &cv)
		if cv.OpenTickets != 0 {
			t.Errorf("open tickets after completion = %d", cv.OpenTickets)
		}

		// A ticket opened just before the plan is cancelled; its answer is
		// lost below.
		lostBody := fmt.Sprintf(`{"customer_id":%q,"description":"last one","priority":"low","skill":"printer","zip":"10001"}`, cust)
		lost := c.do("POST", "/api/tickets", lostBody, false, "Idempotency-Key", "lost-answer")
		if lost.Status != 201 {
			t.Fatalf("ticket before cancelling: %d %s", lost.Status, lost.Body)
		}

		// Cancel the plan: prorated refund.
		r = c.do("POST", "/api/customers/"+cust+"/cancel-plan", `{"reason":"moving"}`, false)
		var cancel struct {
			BillingAccount billing.Account `json:"billing_account"`
		}
		r.Decode(t, &cancel)
		if r.Status != 200 || cancel.BillingAccount.Status != "closed" || cancel.BillingAccount.BalanceCents >= 9900 {
			t.Errorf("cancel plan: %d %s", r.Status, r.Body)
		}
		svctest.WantError(t, "cancel again", c.do("POST", "/api/customers/"+cust+"/cancel-plan", `{}`, false), 409, "no active support plan")
		// With no plan, no new ticket: refused before any owner is asked
		// to write.
		svctest.WantError(t, "ticket without a plan", c.do("POST", "/api/tickets",
			fmt.Sprintf(`{"customer_id":%q,"description":"again","priority":"low","skill":"printer","zip":"10001"}`, cust), false),
			409, "has no active support plan: a ticket needs one")
		c.do("GET", "/api/customers/"+cust, nil, false).Decode(t, &cv)
		if cv.OpenTickets != 1 {
			t.Errorf("open tickets after a refused ticket = %d, want 1", cv.OpenTickets)
		}
		// The ticket's request repeated with its key after the gateway
		// lost its answer (killed before keeping it, say): the saga it
		// began answers, though the plan is gone now.
		gdb, err := sqldb.Open(t.Context(), env.DatabaseURL(gateway.Name))
		if err != nil {
			t.Fatal(err)
		}
		defer gdb.Close()
		if _, err := gdb.ExecContext(t.Context(), `DELETE FROM idempotency_key WHERE idem_key = 'lost-answer'`); err != nil {
			t.Fatal(err)
		}
		if again := c.do("POST", "/api/tickets", lostBody, false, "Idempotency-Key", "lost-answer"); again.Status != 201 || !bytes.Equal(again.Body, lost.Body) {
			t.Errorf("ticket repeated after its answer was lost = %d %s, want the first answer %s", again.Status, again.Body, lost.Body)
		}
		// A profile registered at customer alone has no contract; once
		// closed, it is refused for that first.
		var bob customer.Customer
		svctest.Do(t, "POST", env.URL(customer.Name)+"/customers", map[string]string{"name": "Bob", "email": "bob@example.com", "zip": "10001"}).Decode(t, &bob)
		bobTicket := fmt.Sprintf(`{"customer_id":%q,"description":"x","priority":"low","skill":"printer","zip":"10001"}`, bob.ID)
		svctest.WantError(t, "ticket of a customer never on a plan", c.do("POST", "/api/tickets", bobTicket, false), 409, "no active support plan")
		svctest.Do(t, "POST", env.URL(customer.Name)+"/customers/"+bob.ID+"/close", nil)
		svctest.WantError(t, "ticket of a closed customer", c.do("POST", "/api/tickets", bobTicket, false), 409, "is closed")

		c.do("GET", "/api/zipcodes/94103", nil, false)
		var near struct {
			Zipcodes []struct {
				Zip        string
				DistanceKM float64 `json:"distance_km"`
			}
		}
		c.do("GET", "/api/zipcodes?near=10001&km=3", nil, false).Decode(t, &near)
		if len(near.Zipcodes) == 0 || near.Zipcodes[0].Zip != "10001" || near.Zipcodes[len(near.Zipcodes)-1].DistanceKM > 3 {
			t.Errorf("zip codes near 10001 = %+v, want 10001 first and none past 3 km", near.Zipcodes)
		}
		svctest.WantError(t, "near an unknown zip", c.do("GET", "/api/zipcodes?near=00000", nil, false), 404, "00000")
		svctest.WantError(t, "km not a number", c.do("GET", "/api/zipcodes?near=10001&km=far", nil, true), 400, "km")
		svctest.WantError(t, "km of 0", c.do("GET", "/api/zipcodes?near=10001&km=0", nil, true), 400, "above 0")
		var all struct{ Zipcodes []struct{ Zip string } }
		c.do("GET", "/api/zipcodes", nil, false).Decode(t, &all)
		if len(all.Zipcodes) <= len(near.Zipcodes) {
			t.Errorf("%d zip codes in all, %d near 10001", len(all.Zipcodes), len(near.Zipcodes))
		}
		var rep struct {
			Customer struct{ ID string }
			Tickets  []struct{ ID string }
		}
		c.do("GET", "/api/reports/customers/"+cust, nil, false).Decode(t, &rep)
		// Completed, cancelled, the compensated one no expert could take,
		// and the last one before the plan was cancelled.
		if rep.Customer.ID != cust || len(rep.Tickets) != 4 {
			t.Errorf("customer report = %+v, want %s with 4 tickets", rep, cust)
		}
		svctest.WantError(t, "report of nobody", c.do("GET", "/api/reports/customers/nobody", nil, false), 404, "nobody")
		c.do("GET", "/api/reports/summary", nil, false)
		c.do("GET", "/api/ops/services", nil, false)
		c.do("GET", "/api/ops/outbox/customer?status=dead", nil, false)
		c.do("GET", "/api/ops/outbox/customer/stats", nil, false)
		c.do("POST", "/api/ops/outbox/customer/retry", `{"seqs":[1]}`, false)
		c.do("POST", "/api/ops/outbox/customer/purge", `{"all":true}`, false)
		svctest.WantError(t, "purge naming no rows", c.do("POST", "/api/ops/outbox/customer/purge", `{"seqs":[]}`, false), 400, `{"all":true} for every one`)
		svctest.WantError(t, "unknown service", c.do("GET", "/api/ops/outbox/nothing/stats", nil, false), 404, "nothing")
		c.do("GET", "/api/ops/inbox/audit/parked", nil, false)
		// Customer consumes nothing: the gateway says so, not customer's
		// router's "no route" for its own path.
		noInbox := c.do("GET", "/api/ops/inbox/customer/parked", nil, false)
		svctest.WantError(t, "inbox of a service without one", noInbox, 404, `"customer"`, "GET /ops/inbox/parked", "has an inbox")
		if strings.Contains(noInbox.ErrorMessage(), "no route") || noInbox.Header.Get("Sysops-No-Route") != "" {
			t.Errorf("inbox of a service without one: %s %v", noInbox.Body, noInbox.Header)
		}
		// A mistyped filter is an error, not an unfiltered answer, at the
		// gateway's own routes and at the owners it forwards to.
		svctest.WantError(t, "ops sagas by status", c.do("GET", "/api/ops/sagas?status=committed", nil, true), 400, `"status"`, "state")
		svctest.WantError(t, "outbox by state", c.do("GET", "/api/ops/outbox/customer?state=dead", nil, true), 400, `"state"`, "status")
		svctest.WantError(t, "experts by skill", c.do("GET", "/api/experts?skill=printer", nil, true), 400, `"skill"`, "takes none")
		svctest.WantError(t, "summary with a filter", c.do("GET", "/api/reports/summary?priority=high", nil, true), 400, `"priority"`)
		svctest.WantError(t, "tickets by status twice", c.do("GET", "/api/customers/"+cust+"/tickets?status=open&status=assigned", nil, true), 400, `"status"`, "2 times")
		svctest.WantError(t, "customer with a query", c.do("GET", "/api/customers/"+cust+"?expand=1", nil, true), 400, `"expand"`)
		svctest.WantError(t, "unknown saga action", c.do("POST", "/api/ops/sagas/some-saga/explode", nil, true), 400,
			`"explode"`, "retry, skip, resolve or cancel")
		svctest.WantError(t, "skip with nothing parked", c.do("POST", "/api/ops/inbox/audit/skip",
			`{"aggregate_type":"audit","aggregate_id":"none"}`, false), 404, "nothing parked")

		// Dead letters: a message the audit consumer cannot take is listed
		// with the reason; redriven, it is taken again and, still
		// malformed, dead-lettered anew; then discarded.
		b := brokertest.Connect(t, env.NATS)
		if _, err := b.Publish(context.Background(), natsjs.Message{ID: "garbled", Subject: "sysops.audit.recorded", Data: []byte(`{"x":`)}); err != nil {
			t.Fatal(err)
		}
		type deadLetters struct {
			DeadLetters []struct {
				Seq        uint64
				ID, Reason string
			} `json:"dead_letters"`
		}
		var dls deadLetters
		svctest.Eventually(t, "the dead letter", func() bool {
			dls = deadLetters{}
			c.do("GET", "/api/ops/dlq?limit=10", nil, false).Decode(t, &dls)
			return len(dls.DeadLetters) == 1
		})
		first := fmt.Sprint(dls.DeadLetters[0].Seq)
		if dl := dls.DeadLetters[0]; dl.ID != "garbled" || !strings.Contains(dl.Reason, "malformed envelope") {
			t.Errorf("dead letter = %+v", dl)
		}
		if r := c.do("POST", "/api/ops/dlq/"+first+"/redrive", nil, false); r.Status != 200 || !strings.Contains(string(r.Body), `"garbled"`) {
			t.Errorf("redrive: %d %s", r.Status, r.Body)
		}
		svctest.WantError(t, "redrive of a dead letter gone", c.do("POST", "/api/ops/dlq/"+first+"/redrive", nil, false), 404, "no dead letter "+first)
		svctest.Eventually(t, "the redriven message dead-lettered anew", func() bool {
			dls = deadLetters{}
			c.do("GET", "/api/ops/dlq?after="+first, nil, false).Decode(t, &dls)
			return len(dls.DeadLetters) == 1
		})
		anew := fmt.Sprint(dls.DeadLetters[0].Seq)
		if r := c.do("POST", "/api/ops/dlq/"+anew+"/discard", nil, false); r.Status != 200 {
			t.Errorf("discard: %d %s", r.Status, r.Body)
		}
		svctest.WantError(t, "discard of a dead letter gone", c.do("POST", "/api/ops/dlq/"+anew+"/discard", nil, false), 404, "no dead letter")
		svctest.WantError(t, "dead letter not a number", c.do("POST", "/api/ops/dlq/first/discard", nil, false), 400, "not a dead letter's sequence")
		svctest.WantError(t, "dead letters after not a number", c.do("GET", "/api/ops/dlq?after=x", nil, true), 400, `"after"`)

		// Audit: every write of the flow is recorded once it is consumed.
		svctest.Eventually(t, "audit records of the ticket", func() bool {
			var recs struct{ Records []map[string]any }
			c.do("GET", "/api/audit?entity_type=ticket&entity_id="+tid, nil, false).Decode(t, &recs)
			return len(recs.Records) >= 3 // opened, assigned, completed (+ completion's)
		})

		for _, op := range operations(t) {
			if !c.seen[op] {
				t.Errorf("operation %s of api/openapi.yaml was not exercised", op)
			}
		}
	})
}

func operations(t *testing.T) []string {
	doc, err := openapi3.NewLoader().LoadFromData(api.OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	var ops []string
	for _, item := range doc.Paths.Map() {
		for _, op := range item.Operations() {
			ops = append(ops, op.OperationID)
		}
	}
	return ops
}

// TestSequentialConsistency runs the public workflows with
// --consistency sequential, the baseline: the gateway calls the owners
// one after another itself, and a failure part way is left for the
// client to retry with its Idempotency-Key.
func TestSequentialConsistency(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		fast := 50 * time.Millisecond
		env := svctest.New(t, d, location.Spec(), customer.Spec(), contract.Spec(), billing.Spec(),
			ticket.SpecWith(ticket.Config{ZipRefresh: fast}), assignment.SpecWith(assignment.Config{ZipRefresh: fast}),
			completion.Spec(), survey.Spec(), audit.Spec(), reporting.Spec(), orchestrator.Spec(),
			gateway.SpecWith(gateway.Config{Consistency: gateway.Sequential}))
		c := newChecker(t, env.URL(gateway.Name))
		openTickets := func(cust string) int {
			var cv struct {
				OpenTickets int `json:"open_tickets"`
			}
			c.do("GET", "/api/customers/"+cust, nil, false).Decode(t, &cv)
			return cv.OpenTickets
		}

		reg := `{"name":"Grace Hopper","email":"grace@example.com","zip":"10001","plan":"standard"}`
		r := c.do("POST", "/api/customers", reg, false, "Idempotency-Key", "reg-grace")
		if r.Status != 201 {
			t.Fatalf("register: %d %s", r.Status, r.Body)
		}
		var res struct {
			Customer       struct{ ID string }
			Contract       struct{ Plan, Status string }
			BillingAccount struct{ Status string } `json:"billing_account"`
			SagaID         string                  `json:"saga_id"`
		}
		r.Decode(t, &res)
		cust := res.Customer.ID
		if cust == "" || res.Contract.Plan != "standard" || res.Contract.Status != "active" || res.BillingAccount.Status != "open" || res.SagaID != "" {
			t.Fatalf("registration = %s, want a profile, an active standard contract and an open account, and no saga", r.Body)
		}
		if again := c.do("POST", "/api/customers", reg, false, "Idempotency-Key", "reg-grace"); again.Status != 201 || !bytes.Equal(again.Body, r.Body) {
			t.Errorf("repeated registration: %d %s", again.Status, again.Body)
		}
		// The longest key a client may send: the keys derived from it for
		// each owner's call stay within what the owners accept.
		longKey := strings.Repeat("k", idempotency.MaxKeyLength)
		linus := `{"name":"Linus","email":"linus@example.com","zip":"10001","plan":"basic"}`
		if r := c.do("POST", "/api/customers", linus, false, "Idempotency-Key", longKey); r.Status != 201 {
			t.Errorf("register with a key of %d characters: %d %s", len(longKey), r.Status, r.Body)
		} else if again := c.do("POST", "/api/customers", linus, false, "Idempotency-Key", longKey); again.Status != 201 || !bytes.Equal(again.Body, r.Body) {
			t.Errorf("repeated with the long key: %d %s", again.Status, again.Body)
		}
		svctest.WantError(t, "unknown zip", c.do("POST", "/api/customers", `{"name":"B","email":"b@example.com","zip":"00000","plan":"basic"}`, true), 400, `"zip"`)
		// The same steps as the saga: profile, plan and account agree.
		registrationsAgree := func(when string) {
			t.Helper()
			problems, err := invariant.CheckRegistrations(t.Context(), env.Peers(), []string{cust})
			if err != nil || len(problems) > 0 {
				t.Errorf("%s: %v %v", when, problems, err)
			}
		}
		registrationsAgree("after registering")

		if r := c.do("POST", "/api/experts", `{"name":"Expert","email":"x@sysops.example","skills":["printer"],"zip":"07030","capacity":3}`, false); r.Status != 201 {
			t.Fatalf("add expert: %d %s", r.Status, r.Body)
		}
		var tv struct {
			Ticket     struct{ ID, Status string }
			Assignment *struct {
				Expert struct{ Zip string }
			}
			Note   string
			SagaID string `json:"saga_id"`
		}
		r = c.do("POST", "/api/tickets", fmt.Sprintf(`{"customer_id":%q,"description":"jammed","priority":"high","skill":"printer","zip":"10002"}`, cust), false)
		r.Decode(t, &tv)
		if r.Status != 201 || tv.Ticket.Status != "assigned" || tv.Assignment == nil || tv.Assignment.Expert.Zip != "07030" || tv.SagaID != "" {
			t.Fatalf("create ticket: %d %s, want it assigned to the Hoboken expert without a saga", r.Status, r.Body)
		}
		assigned := tv.Ticket.ID

		// No expert with the skill: the ticket stays open, waiting, and the
		// answer says why.
		tv.Assignment = nil
		r = c.do("POST", "/api/tickets", fmt.Sprintf(`{"customer_id":%q,"description":"phone","priority":"low","skill":"mobile","zip":"10001"}`, cust), false)
		r.Decode(t, &tv)
		if r.Status != 201 || tv.Ticket.Status != "open" || tv.Assignment != nil || !strings.Contains(tv.Note, "mobile") {
			t.Fatalf("ticket no expert can take: %d %s, want it open with a note naming the skill", r.Status, r.Body)
		}
		waiting := tv.Ticket.ID
		if n := openTickets(cust); n != 2 {
			t.Errorf("open_tickets = %d, want 2", n)
		}

		// Cancelled, repeated with its key, then asked again by another
		// request: counted down once, and the other request refused.
		for i := range 2 {
			var cv struct{ Ticket struct{ Status string } }
			r = c.do("POST", "/api/tickets/"+waiting+"/cancel", nil, false, "Idempotency-Key", "cancel-waiting")
			r.Decode(t, &cv)
			if r.Status != 200 || cv.Ticket.Status != "cancelled" {
				t.Errorf("cancel #%d: %d %s", i+1, r.Status, r.Body)
			}
		}
		svctest.WantError(t, "cancel by another request", c.do("POST", "/api/tickets/"+waiting+"/cancel", nil, false), 409, "already cancelled")
		if n := openTickets(cust); n != 1 {
			t.Errorf("open_tickets after cancelling = %d, want 1", n)
		}

		// A failure part way: assignment is down after the ticket was
		// opened and counted. The client sees an error and the work done
		// so far stays; its retry with the same key repeats none of it.
		env.Stop(assignment.Name)
		body := fmt.Sprintf(`{"customer_id":%q,"description":"toner","priority":"medium","skill":"printer","zip":"10001"}`, cust)
		if r := c.do("POST", "/api/tickets", body, false, "Idempotency-Key", "toner-1"); r.Status < 500 {
			t.Fatalf("create ticket with assignment down: %d %s, want a 5xx", r.Status, r.Body)
		}
		if n := openTickets(cust); n != 2 {
			t.Errorf("open_tickets with the workflow half done = %d, want 2 (the baseline does not undo)", n)
		}
		env.Restart(assignment.Name)
		r = c.do("POST", "/api/tickets", body, false, "Idempotency-Key", "toner-1")
		r.Decode(t, &tv)
		if r.Status != 201 || tv.Ticket.Status != "assigned" {
			t.Fatalf("retry with the same key: %d %s", r.Status, r.Body)
		}
		var list struct{ Tickets []struct{ ID string } }
		c.do("GET", "/api/customers/"+cust+"/tickets?status=assigned", nil, false).Decode(t, &list)
		if n := openTickets(cust); n != 2 || len(list.Tickets) != 2 {
			t.Errorf("after the retry: open_tickets %d, %d assigned tickets; want 2 and 2 (no step repeated)", n, len(list.Tickets))
		}

		r = c.do("POST", "/api/tickets/"+assigned+"/complete", `{"notes":"cleared the jam"}`, false)
		if r.Status != 200 {
			t.Fatalf("complete: %d %s", r.Status, r.Body)
		}
		var surveys struct {
			Surveys []struct {
				TicketID string `json:"ticket_id"`
			}
		}
		c.do("GET", "/api/surveys?customer_id="+cust, nil, false).Decode(t, &surveys)
		if len(surveys.Surveys) != 1 || surveys.Surveys[0].TicketID != assigned {
			t.Errorf("surveys = %+v, want one for %s", surveys, assigned)
		}
		if n := openTickets(cust); n != 1 {
			t.Errorf("open_tickets after completing = %d, want 1", n)
		}

		// Cancelling the plan fails part way (billing is down after the
		// contract was cancelled); its retry with the same key finds the
		// contract its first attempt cancelled and finishes the rest.
		env.Stop(billing.Name)
		if r := c.do("POST", "/api/customers/"+cust+"/cancel-plan", `{"reason":"budget"}`, false, "Idempotency-Key", "budget-1"); r.Status < 500 {
			t.Fatalf("cancel plan with billing down: %d %s, want a 5xx", r.Status, r.Body)
		}
		env.Restart(billing.Name)
		r = c.do("POST", "/api/customers/"+cust+"/cancel-plan", `{"reason":"budget"}`, false, "Idempotency-Key", "budget-1")
		var cancel struct {
			Contract       struct{ Status string }
			BillingAccount billing.Account `json:"billing_account"`
		}
		r.Decode(t, &cancel)
		if r.Status != 200 || cancel.Contract.Status != "cancelled" || cancel.BillingAccount.Status != "closed" {
			t.Errorf("cancel plan: %d %s", r.Status, r.Body)
		}
		svctest.WantError(t, "cancel again", c.do("POST", "/api/customers/"+cust+"/cancel-plan", `{}`, false), 409, "no active support plan")
		svctest.WantError(t, "ticket without a plan", c.do("POST", "/api/tickets",
			fmt.Sprintf(`{"customer_id":%q,"description":"again","priority":"low","skill":"printer","zip":"10001"}`, cust), false),
			409, "has no active support plan: a ticket needs one")
		if n := openTickets(cust); n != 1 {
			t.Errorf("open_tickets after a refused ticket = %d, want 1", n)
		}
		registrationsAgree("after cancelling the plan")
		if problems, err := invariant.Check(t.Context(), env.Peers()); err != nil || len(problems) > 0 {
			t.Errorf("invariants: %v %v", problems, err)
		}
	})
}
