package orchestrator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sysops-squad/sysops/idempotency"
	"github.com/sysops-squad/sysops/internal/invariant"
	"github.com/sysops-squad/sysops/internal/svc"
	"github.com/sysops-squad/sysops/internal/svctest"
	"github.com/sysops-squad/sysops/saga"
	"github.com/sysops-squad/sysops/services/assignment"
	"github.com/sysops-squad/sysops/services/billing"
	"github.com/sysops-squad/sysops/services/completion"
	"github.com/sysops-squad/sysops/services/contract"
	"github.com/sysops-squad/sysops/services/customer"
	"github.com/sysops-squad/sysops/services/location"
	"github.com/sysops-squad/sysops/services/orchestrator"
	"github.com/sysops-squad/sysops/services/survey"
	"github.com/sysops-squad/sysops/services/ticket"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

func setup(t *testing.T, d sqldb.Dialect, cfg orchestrator.Config) (*svctest.Env, string) {
	t.Helper()
	fast := 50 * time.Millisecond
	env := svctest.New(t, d, location.Spec(), customer.Spec(), ticket.SpecWith(ticket.Config{ZipRefresh: fast}),
		assignment.SpecWith(assignment.Config{ZipRefresh: fast}), orchestrator.SpecWith(cfg))
	var c customer.Customer
	svctest.Do(t, "POST", env.URL("customer")+"/customers", map[string]string{"name": "Ada", "email": "ada@example.com", "zip": "10001"}).Decode(t, &c)
	if r := svctest.Do(t, "POST", env.URL("assignment")+"/experts", map[string]any{"name": "Hugo", "email": "hugo@example.com",
		"skills": []string{"printer"}, "zip": "07030", "capacity": 2}); r.Status != 201 {
		t.Fatalf("expert: %d %s", r.Status, r.Body)
	}
	return env, c.ID
}

func create(t *testing.T, env *svctest.Env, customerID, skill string, headers ...string) svctest.Response {
	t.Helper()
	return svctest.Do(t, "POST", env.URL(orchestrator.Name)+"/sagas/create-ticket", map[string]string{"customer_id": customerID,
		"description": "printer jams", "priority": "high", "skill": skill, "zip": "10001"}, headers...)
}

func checkInvariants(t *testing.T, env *svctest.Env) {
	t.Helper()
	checkPeers(t, env.Peers())
}

// checkPeers checks the invariants across the services at peers.
func checkPeers(t *testing.T, peers map[string]string) {
	t.Helper()
	problems, err := invariant.Check(context.Background(), peers)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("invariant: %s", p)
	}
}

// accepted returns the id of the saga a 202 answer names, failing the
// test on any other answer.
func accepted(t *testing.T, what string, r svctest.Response) string {
	t.Helper()
	var out struct {
		SagaID string `json:"saga_id"`
	}
	r.Decode(t, &out)
	if r.Status != 202 || out.SagaID == "" {
		t.Fatalf("%s: %d %s, want 202 with the saga's id", what, r.Status, r.Body)
	}
	return out.SagaID
}

// checkRegistrations checks that the owners agree on the registrations
// of customers.
func checkRegistrations(t *testing.T, env *svctest.Env, customers []string) {
	t.Helper()
	problems, err := invariant.CheckRegistrations(t.Context(), env.Peers(), customers)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("invariant: %s", p)
	}
}

func TestCreateTicketSaga(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env, cust := setup(t, d, orchestrator.Config{})
		r := create(t, env, cust, "printer", "Idempotency-Key", "k1")
		if r.Status != 201 {
			t.Fatalf("create: %d %s", r.Status, r.Body)
		}
		var out struct {
			SagaID string `json:"saga_id"`
			State  string
			Result struct {
				Ticket     struct{ ID, Status string }
				Assignment struct {
					ExpertID string `json:"expert_id"`
				}
			}
		}
		r.Decode(t, &out)
		if out.State != "committed" || out.Result.Ticket.Status != "assigned" || out.Result.Assignment.ExpertID == "" {
			t.Errorf("outcome = %s", r.Body)
		}
		// The same request again reaches the same saga: nothing new.
		if again := create(t, env, cust, "printer", "Idempotency-Key", "k1"); again.Status != 201 || string(again.Body) != string(r.Body) {
			t.Errorf("repeat: %d %s", again.Status, again.Body)
		}
		checkInvariants(t, env)

		// No expert with the skill: compensated, nothing left behind.
		svctest.WantError(t, "no mobile expert", create(t, env, cust, "mobile"), 409, "compensated", "mobile")
		// Unknown customer: the count step is refused; the ticket cancelled.
		svctest.WantError(t, "unknown customer", create(t, env, "nobody", "printer"), 409, "nobody")
		svctest.WantError(t, "bad priority", svctest.Do(t, "POST", env.URL(orchestrator.Name)+"/sagas/create-ticket",
			map[string]string{"customer_id": cust, "description": "x", "priority": "asap", "skill": "printer", "zip": "10001"}), 400, `"priority"`)
		checkInvariants(t, env)
		var ts struct{ Tickets []ticket.Ticket }
		svctest.Do(t, "GET", env.URL("ticket")+"/tickets?status=cancelled", nil).Decode(t, &ts)
		if len(ts.Tickets) != 2 {
			t.Errorf("cancelled tickets = %d, want 2", len(ts.Tickets))
		}
		if r := svctest.Do(t, "GET", env.URL(orchestrator.Name)+"/sagas/"+out.SagaID, nil); r.Status != 200 || !strings.Contains(string(r.Body), `"mark-assigned"`) {
			t.Errorf("saga: %d %s", r.Status, r.Body)
		}
		if r := svctest.Do(t, "GET", env.URL(orchestrator.Name)+"/ops/sagas?state=compensated", nil); r.Status != 200 || strings.Count(string(r.Body), `"compensated"`) != 2 {
			t.Errorf("ops list: %d %s", r.Status, r.Body)
		}
	})
}

// TestParticipantDown: a participant that is down makes the saga
// compensate; the others are left as they were.
func TestParticipantDown(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env, cust := setup(t, d, orchestrator.Config{Wait: 2 * time.Second,
			Retry: saga.RetryPolicy{MaxAttempts: 3, Initial: 10 * time.Millisecond, Max: 20 * time.Millisecond}})
		env.Stop("assignment")
		// The assignment step fails; its compensation (a release, which
		// must reach assignment in case the call applied) waits for it.
		r := create(t, env, cust, "printer")
		var out struct {
			SagaID string `json:"saga_id"`
			State  string
		}
		r.Decode(t, &out)
		if r.Status != 202 || out.State != "compensating" {
			t.Fatalf("with assignment down: %d %s", r.Status, r.Body)
		}
		env.Restart("assignment")
		svctest.Eventually(t, "the saga to compensate", func() bool {
			return svctest.Do(t, "GET", env.URL(orchestrator.Name)+"/sagas/"+out.SagaID, nil).JSON(t)["state"] == "compensated"
		})
		checkInvariants(t, env)
		if r := create(t, env, cust, "printer"); r.Status != 201 {
			t.Errorf("after assignment came back: %d %s", r.Status, r.Body)
		}
		checkInvariants(t, env)
	})
}

// TestSlowParticipantReturns202: a saga still running when the POST's
// wait ends is answered 202 with its id; it finishes on its own.
func TestSlowParticipantReturns202(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env, cust := setup(t, d, orchestrator.Config{Wait: time.Millisecond})
		r := create(t, env, cust, "printer")
		var out struct {
			SagaID string `json:"saga_id"`
			State  string
		}
		r.Decode(t, &out)
		if r.Status != 202 || out.SagaID == "" || r.Header.Get("Location") != "/sagas/"+out.SagaID {
			t.Fatalf("create: %d %s", r.Status, r.Body)
		}
		svctest.Eventually(t, "the saga to commit", func() bool {
			return svctest.Do(t, "GET", env.URL(orchestrator.Name)+"/sagas/"+out.SagaID, nil).JSON(t)["state"] == "committed"
		})
		checkInvariants(t, env)
	})
}

// TestFailingCompensationNeedsAttention: with ticket down, opening the
// ticket fails and so does cancelling it; the saga stops in
// needs_attention, and a retry once ticket is back finishes it.
func TestFailingCompensationNeedsAttention(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		fast := saga.RetryPolicy{MaxAttempts: 2, Initial: 10 * time.Millisecond, Max: 20 * time.Millisecond}
		env, cust := setup(t, d, orchestrator.Config{Wait: 5 * time.Second, Retry: fast, CompensationRetry: fast,
			Saga: saga.Config{BreakerCooldown: 50 * time.Millisecond, PollInterval: 50 * time.Millisecond}})
		env.Stop("ticket")
		r := create(t, env, cust, "printer")
		var out struct {
			SagaID string `json:"saga_id"`
			State  string
			Reason string
		}
		r.Decode(t, &out)
		if r.Status != 202 || out.State != "needs_attention" || !strings.Contains(out.Reason, "ticket") {
			t.Fatalf("with ticket down: %d %s", r.Status, r.Body)
		}
		env.Restart("ticket")
		base := env.URL(orchestrator.Name)
		if r := svctest.Do(t, "POST", base+"/ops/sagas/"+out.SagaID+"/retry", nil); r.Status != 200 {
			t.Fatalf("retry: %d %s", r.Status, r.Body)
		}
		svctest.Eventually(t, "the saga to compensate", func() bool {
			return svctest.Do(t, "GET", base+"/sagas/"+out.SagaID, nil).JSON(t)["state"] == "compensated"
		})
		checkInvariants(t, env)
		// The tombstone: the ticket id of that saga can never be created.
		var sg saga.Saga
		svctest.Do(t, "GET", base+"/sagas/"+out.SagaID, nil).Decode(t, &sg)
		var in orchestrator.TicketRequest
		if err := json.Unmarshal(sg.Input, &in); err != nil {
			t.Fatal(err)
		}
		late := map[string]string{"id": in.TicketID, "customer_id": cust, "description": "late", "priority": "low", "skill": "printer", "zip": "10001"}
		svctest.WantError(t, "the late action", svctest.Do(t, "POST", env.URL("ticket")+"/tickets", late), 409, "cancelled before it was created")
	})
}

// everyParticipant starts the orchestrator with every participant of its
// workflows.
func everyParticipant(t *testing.T, d sqldb.Dialect, cfg orchestrator.Config) *svctest.Env {
	t.Helper()
	fast := 50 * time.Millisecond
	return svctest.New(t, d, location.Spec(), customer.Spec(), contract.Spec(), billing.Spec(),
		ticket.SpecWith(ticket.Config{ZipRefresh: fast}), assignment.SpecWith(assignment.Config{ZipRefresh: fast}),
		survey.Spec(), completion.Spec(), orchestrator.SpecWith(cfg))
}

func TestRegisterAndCompleteSagas(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env := everyParticipant(t, d, orchestrator.Config{Wait: 5 * time.Second,
			Retry: saga.RetryPolicy{MaxAttempts: 2, Initial: 10 * time.Millisecond, Max: 20 * time.Millisecond}})
		base := env.URL(orchestrator.Name)
		register := func(email string) svctest.Response {
			return svctest.Do(t, "POST", base+"/sagas/register-customer", map[string]string{"name": "Ada", "email": email, "zip": "10001", "plan": "premium"})
		}
		r := register("ada@example.com")
		var out struct {
			Result struct {
				Customer       struct{ ID, Status string }
				Contract       struct{ ID, Status string }
				BillingAccount struct {
					ID      string
					Charges []struct {
						AmountCents int `json:"amount_cents"`
					}
				} `json:"billing_account"`
			}
		}
		r.Decode(t, &out)
		if r.Status != 201 || out.Result.Customer.Status != "active" || out.Result.Contract.Status != "active" ||
			len(out.Result.BillingAccount.Charges) != 1 {
			t.Fatalf("register: %d %s", r.Status, r.Body)
		}
		cust := out.Result.Customer.ID
		svctest.WantError(t, "email taken", register("ada@example.com"), 409, "already registered")

		// Billing down: the profile and the plan are compensated.
		env.Stop("billing")
		r = register("bo@example.com")
		var pending struct {
			SagaID string `json:"saga_id"`
		}
		r.Decode(t, &pending)
		if r.Status != 202 && r.Status != 409 {
			t.Fatalf("with billing down: %d %s", r.Status, r.Body)
		}
		env.Restart("billing")
		if pending.SagaID != "" {
			svctest.Eventually(t, "the registration to compensate", func() bool {
				return svctest.Do(t, "GET", base+"/sagas/"+pending.SagaID, nil).JSON(t)["state"] == "compensated"
			})
		}
		var cs struct {
			Customers []struct{ Email, Status string }
		}
		svctest.Do(t, "GET", env.URL("customer")+"/customers?email=bo@example.com", nil).Decode(t, &cs)
		if len(cs.Customers) != 1 || cs.Customers[0].Status != "closed" {
			t.Errorf("bo after the compensated registration: %+v", cs.Customers)
		}

		// A ticket, then its completion as a saga.
		svctest.Do(t, "POST", env.URL("assignment")+"/experts", map[string]any{"name": "Hugo", "email": "hugo@example.com",
			"skills": []string{"printer"}, "zip": "07030", "capacity": 2})
		r = create(t, env, cust, "printer")
		var tv struct {
			Result struct{ Ticket struct{ ID string } }
		}
		r.Decode(t, &tv)
		tid := tv.Result.Ticket.ID
		complete := func() svctest.Response {
			return svctest.Do(t, "POST", base+"/sagas/complete-ticket", map[string]string{"ticket_id": tid, "notes": "fixed"})
		}
		r = complete()
		var done struct {
			Result struct {
				SurveyID string `json:"survey_id"`
				ExpertID string `json:"expert_id"`
			}
		}
		r.Decode(t, &done)
		if r.Status != 201 || done.Result.SurveyID == "" || done.Result.ExpertID == "" {
			t.Fatalf("complete: %d %s", r.Status, r.Body)
		}
		svctest.WantError(t, "complete again", complete(), 409, "already completed")

		// The same request repeated with its key after its answer was lost
		// (the orchestrator was killed before it kept it, say) gets the
		// saga's outcome, not the guard of a new saga ("already
		// completed"). The lost answer is its row in the key store.
		odb, err := sqldb.Open(t.Context(), env.DatabaseURL(orchestrator.Name))
		if err != nil {
			t.Fatal(err)
		}
		defer odb.Close()
		for _, path := range []string{"/sagas/complete-ticket", "/sagas/cancel-ticket"} {
			var tv struct {
				Result struct{ Ticket struct{ ID string } }
			}
			create(t, env, cust, "printer").Decode(t, &tv)
			body := map[string]string{"ticket_id": tv.Result.Ticket.ID}
			if path == "/sagas/complete-ticket" {
				body["notes"] = "fixed"
			}
			key := "lost-answer" + path
			first := svctest.Do(t, "POST", base+path, body, "Idempotency-Key", key)
			if first.Status != 201 {
				t.Fatalf("%s: %d %s", path, first.Status, first.Body)
			}
			if _, err := odb.ExecContext(t.Context(), `DELETE FROM idempotency_key WHERE idem_key = $1`, key); err != nil {
				t.Fatal(err)
			}
			if again := svctest.Do(t, "POST", base+path, body, "Idempotency-Key", key); again.Status != 201 || !bytes.Equal(again.Body, first.Body) {
				t.Errorf("%s repeated after its answer was lost: %d %s, want the first answer %s", path, again.Status, again.Body, first.Body)
			}
		}
		svctest.WantError(t, "cancel a completed ticket", svctest.Do(t, "POST", base+"/sagas/cancel-ticket",
			map[string]string{"ticket_id": tid}), 409, "cannot become cancelled")

		// Cancel an assigned ticket: the expert is released, the count goes down.
		r = create(t, env, cust, "printer")
		var tv2 struct {
			Result struct{ Ticket struct{ ID string } }
		}
		r.Decode(t, &tv2)
		if r := svctest.Do(t, "POST", base+"/sagas/cancel-ticket", map[string]string{"ticket_id": tv2.Result.Ticket.ID}); r.Status != 201 {
			t.Fatalf("cancel ticket: %d %s", r.Status, r.Body)
		}
		if st := svctest.Do(t, "GET", env.URL("assignment")+"/assignments/"+tv2.Result.Ticket.ID, nil).JSON(t)["status"]; st != "released" {
			t.Errorf("assignment after cancel: %v", st)
		}
		svctest.WantError(t, "cancel again", svctest.Do(t, "POST", base+"/sagas/cancel-ticket",
			map[string]string{"ticket_id": tv2.Result.Ticket.ID}), 409, "already cancelled")
		checkInvariants(t, env)
		if n := svctest.Do(t, "GET", env.URL("customer")+"/customers/"+cust, nil).JSON(t)["open_tickets"]; n != 0.0 {
			t.Errorf("open tickets after completion = %v", n)
		}
		// An open ticket cannot be completed: compensated, nothing changed.
		other := svctest.Do(t, "POST", env.URL("ticket")+"/tickets", map[string]string{"customer_id": cust, "description": "x",
			"priority": "low", "skill": "printer", "zip": "10001"}).JSON(t)["id"].(string)
		svctest.WantError(t, "complete an open ticket", svctest.Do(t, "POST", base+"/sagas/complete-ticket",
			map[string]string{"ticket_id": other, "notes": "x"}), 409, "cannot become completed")

		// Cancel the plan with billing down: the contract is reinstated.
		cancelPlan := func() svctest.Response {
			return svctest.Do(t, "POST", base+"/sagas/cancel-plan", map[string]string{"customer_id": cust, "reason": "moving"})
		}
		env.Stop("billing")
		svctest.WantError(t, "billing down", cancelPlan(), 409, "close-account")
		env.Restart("billing")
		problems, err := invariant.CheckRegistrations(context.Background(), env.Peers(), []string{cust})
		if err != nil || len(problems) > 0 {
			t.Errorf("after the compensated cancellation: %v %v", problems, err)
		}
		r = cancelPlan()
		var cancelled struct {
			Result struct {
				Contract       struct{ Status string }
				BillingAccount struct {
					Status  string
					Charges []struct {
						AmountCents int `json:"amount_cents"`
					}
				} `json:"billing_account"`
			}
		}
		r.Decode(t, &cancelled)
		if r.Status != 201 || cancelled.Result.Contract.Status != "cancelled" || cancelled.Result.BillingAccount.Status != "closed" ||
			len(cancelled.Result.BillingAccount.Charges) != 2 || cancelled.Result.BillingAccount.Charges[1].AmountCents >= 0 {
			t.Errorf("cancel plan: %d %s", r.Status, r.Body)
		}
		if p := svctest.Do(t, "GET", env.URL("customer")+"/customers/"+cust, nil).JSON(t)["support_plan"]; p != "" {
			t.Errorf("the profile still shows plan %v", p)
		}
		problems, err = invariant.CheckRegistrations(context.Background(), env.Peers(), []string{cust})
		if err != nil || len(problems) > 0 {
			t.Errorf("after the cancellation: %v %v", problems, err)
		}
		svctest.WantError(t, "cancel again", cancelPlan(), 409, "no active support plan")
	})
}

// TestSlowParticipantCompensates: a participant slower than the step's
// timeout is retried, then the saga compensates — and the assignment the
// slow calls made in the end is released (the compensation reaches the
// participant after them).
func TestSlowParticipantCompensates(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env, cust := setup(t, d, orchestrator.Config{})
		env.Stop(orchestrator.Name)
		target, err := url.Parse(env.URL("assignment"))
		if err != nil {
			t.Fatal(err)
		}
		proxy := httputil.NewSingleHostReverseProxy(target)
		proxy.ErrorLog = log.New(io.Discard, "", 0)
		slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Assigning is slow, alone or in a batch; releasing is not.
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			if r.Method == http.MethodPost && (r.URL.Path == "/assignments" ||
				r.URL.Path == idempotency.BatchPath && bytes.Contains(body, []byte(`"path":"/assignments"`))) {
				time.Sleep(900 * time.Millisecond) // well past the step's timeout
				// The caller has given up; the call still lands.
				r = r.WithContext(context.WithoutCancel(r.Context()))
			}
			proxy.ServeHTTP(w, r)
		}))
		defer slow.Close()
		peers := env.Peers()
		peers["assignment"] = slow.URL
		db := sqldbtest.Open(t, d)
		if _, err := sqldb.Migrate(context.Background(), db, orchestrator.Name, saga.Migrations()); err != nil {
			t.Fatal(err)
		}
		s, err := orchestrator.New(db, svc.NewPeers(peers), orchestrator.Config{StepTimeout: 300 * time.Millisecond,
			Retry: saga.RetryPolicy{MaxAttempts: 2, Initial: 10 * time.Millisecond, Max: 20 * time.Millisecond}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		o := s.Orchestrator()
		if err := o.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		defer o.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		sg, err := o.Run(ctx, orchestrator.CreateTicket, "", orchestrator.TicketRequest{TicketID: "tk-slow", CustomerID: cust,
			Description: "slow", Priority: "low", Skill: "printer", Zip: "10001"})
		if err != nil {
			t.Fatal(err)
		}
		if sg.State != saga.Compensated || !strings.Contains(sg.Reason, "assign-expert") {
			t.Fatalf("saga = %s %s", sg.State, sg.Reason)
		}
		time.Sleep(1200 * time.Millisecond) // the slow calls land after their timeouts
		checkInvariants(t, env)
		if r := svctest.Do(t, "GET", env.URL("assignment")+"/assignments/tk-slow", nil); r.Status == 200 && r.JSON(t)["status"] == "assigned" {
			t.Errorf("the late assignment stayed: %s", r.Body)
		}
	})
}

// TestRacingRequests: requests that race on one ticket or one plan, each
// with its own key. One makes the change and the others are refused with
// 409 — before, two completes both passed the ticket's close (a move to
// the status it had was a no-op) and the loser's next step failed, leaving
// its saga needing attention, and two cancel-plans both reported the
// cancellation.
func TestRacingRequests(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env := everyParticipant(t, d, orchestrator.Config{Wait: 10 * time.Second})
		base := env.URL(orchestrator.Name)
		if r := svctest.Do(t, "POST", env.URL("assignment")+"/experts", map[string]any{"name": "Hugo", "email": "hugo@example.com",
			"skills": []string{"printer"}, "zip": "07030", "capacity": 50}); r.Status != 201 {
			t.Fatalf("expert: %d %s", r.Status, r.Body)
		}
		const customers, racers = 4, 3
		var ids []string
		for i := range customers {
			var out struct {
				Result struct{ Customer struct{ ID string } }
			}
			r := svctest.Do(t, "POST", base+"/sagas/register-customer", map[string]string{"name": "Ada",
				"email": fmt.Sprintf("ada%d@example.com", i), "zip": "10001", "plan": "premium"})
			r.Decode(t, &out)
			if r.Status != 201 {
				t.Fatalf("register: %d %s", r.Status, r.Body)
			}
			ids = append(ids, out.Result.Customer.ID)
		}
		// Every request of every race is sent at once.
		type race struct {
			name     string
			statuses [racers]int
			bodies   [racers]string
		}
		var races []*race
		var wg sync.WaitGroup
		for _, cust := range ids {
			var tv struct {
				Result struct{ Ticket struct{ ID string } }
			}
			if r := create(t, env, cust, "printer"); r.Status != 201 {
				t.Fatalf("create: %d %s", r.Status, r.Body)
			} else {
				r.Decode(t, &tv)
			}
			completes := &race{name: "complete " + tv.Result.Ticket.ID}
			plans := &race{name: "cancel the plan of " + cust}
			races = append(races, completes, plans)
			for i := range racers {
				wg.Go(func() {
					// Each with its own notes: the loser's notes would
					// conflict with the winner's at the next step.
					r := svctest.Do(t, "POST", base+"/sagas/complete-ticket", map[string]string{"ticket_id": tv.Result.Ticket.ID,
						"notes": fmt.Sprint("notes ", i)})
					completes.statuses[i], completes.bodies[i] = r.Status, string(r.Body)
				})
				wg.Go(func() {
					r := svctest.Do(t, "POST", base+"/sagas/cancel-plan", map[string]string{"customer_id": cust, "reason": fmt.Sprint("reason ", i)})
					plans.statuses[i], plans.bodies[i] = r.Status, string(r.Body)
				})
			}
		}
		wg.Wait()
		for _, rc := range races {
			won := 0
			for i, st := range rc.statuses {
				switch {
				case st == 201:
					won++
				case st != 409:
					t.Errorf("%s, request %d: %d %s, want 201 or 409", rc.name, i, st, rc.bodies[i])
				}
			}
			if won != 1 {
				t.Errorf("%s: %d requests made the change, want 1 (answers %v)", rc.name, won, rc.statuses)
			}
		}
		for _, state := range []string{"running", "compensating", "needs_attention"} {
			var list struct{ Sagas []saga.Saga }
			svctest.Do(t, "GET", base+"/ops/sagas?state="+state, nil).Decode(t, &list)
			for _, sg := range list.Sagas {
				t.Errorf("saga %s of %s is %s: %s", sg.ID, sg.Definition, state, sg.LastError)
			}
		}
		checkInvariants(t, env)
		checkRegistrations(t, env, ids)
	})
}

// TestCancelWhileCreating: a ticket whose create-ticket saga has not
// ended (assignment is down, so it keeps retrying the assignment) cannot
// be cancelled (nor completed) yet — the cancellation would race the
// saga, which would go on to assign a cancelled ticket or, compensating,
// count it down a second time. Once the saga ends, the ticket is
// cancelled as any other.
func TestCancelWhileCreating(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env, cust := setup(t, d, orchestrator.Config{Wait: 100 * time.Millisecond,
			Retry: saga.RetryPolicy{MaxAttempts: 1000, Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond},
			Saga:  saga.Config{BreakerCooldown: 50 * time.Millisecond}})
		base := env.URL(orchestrator.Name)
		env.Stop("assignment")
		sagaID := accepted(t, "create with assignment down", create(t, env, cust, "printer"))
		tid := "tk-" + strings.TrimPrefix(sagaID, orchestrator.CreateTicket+"-")
		svctest.Eventually(t, "the ticket to be opened", func() bool {
			return svctest.Do(t, "GET", env.URL("ticket")+"/tickets/"+tid, nil).Status == 200
		})
		svctest.WantError(t, "cancel while creating", svctest.Do(t, "POST", base+"/sagas/cancel-ticket",
			map[string]string{"ticket_id": tid}), 409, "still being created")
		svctest.WantError(t, "complete while creating", svctest.Do(t, "POST", base+"/sagas/complete-ticket",
			map[string]string{"ticket_id": tid, "notes": "too soon"}), 409, "still being created")
		env.Restart("assignment")
		svctest.Eventually(t, "the create saga to commit", func() bool {
			return svctest.Do(t, "GET", base+"/sagas/"+sagaID, nil).JSON(t)["state"] == "committed"
		})
		if r := svctest.Do(t, "POST", base+"/sagas/cancel-ticket", map[string]string{"ticket_id": tid}); r.Status != 201 {
			t.Fatalf("cancel once created: %d %s", r.Status, r.Body)
		}
		checkInvariants(t, env)
		if n := svctest.Do(t, "GET", env.URL("customer")+"/customers/"+cust, nil).JSON(t)["open_tickets"]; n != 0.0 {
			t.Errorf("open tickets = %v, want 0", n)
		}
	})
}

// TestCancelPlanWhileRegistering: a plan whose registration has not ended
// (billing is down, so it keeps retrying the account) cannot be cancelled
// yet, nor the customer open a ticket; once the registration commits,
// both can.
func TestCancelPlanWhileRegistering(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env := everyParticipant(t, d, orchestrator.Config{Wait: 100 * time.Millisecond,
			Retry: saga.RetryPolicy{MaxAttempts: 1000, Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond},
			Saga:  saga.Config{BreakerCooldown: 50 * time.Millisecond}})
		base := env.URL(orchestrator.Name)
		env.Stop("billing")
		sagaID := accepted(t, "register with billing down", svctest.Do(t, "POST", base+"/sagas/register-customer",
			map[string]string{"name": "Ada", "email": "ada@example.com", "zip": "10001", "plan": "premium"}))
		cust := "cu-" + strings.TrimPrefix(sagaID, orchestrator.RegisterCustomer+"-")
		svctest.Eventually(t, "the contract to be registered", func() bool {
			var ks struct{ Contracts []struct{ Status string } }
			svctest.Do(t, "GET", env.URL("contract")+"/contracts?customer_id="+cust, nil).Decode(t, &ks)
			return len(ks.Contracts) == 1
		})
		cancelPlan := func() svctest.Response {
			return svctest.Do(t, "POST", base+"/sagas/cancel-plan", map[string]string{"customer_id": cust, "reason": "changed my mind"})
		}
		svctest.WantError(t, "cancel the plan while registering", cancelPlan(), 409, "still being registered")
		svctest.WantError(t, "a ticket while registering", create(t, env, cust, "printer"), 409, "still being registered")
		env.Restart("billing")
		svctest.Eventually(t, "the registration to commit", func() bool {
			return svctest.Do(t, "GET", base+"/sagas/"+sagaID, nil).JSON(t)["state"] == "committed"
		})
		if r := svctest.Do(t, "POST", env.URL("assignment")+"/experts", map[string]any{"name": "Hugo", "email": "hugo@example.com",
			"skills": []string{"printer"}, "zip": "07030", "capacity": 2}); r.Status != 201 {
			t.Fatalf("expert: %d %s", r.Status, r.Body)
		}
		if r := create(t, env, cust, "printer"); r.Status != 201 && r.Status != 202 {
			t.Fatalf("a ticket once registered: %d %s, want it begun", r.Status, r.Body)
		}
		if r := cancelPlan(); r.Status != 201 {
			t.Fatalf("cancel the plan once registered: %d %s", r.Status, r.Body)
		}
		checkRegistrations(t, env, []string{cust})
	})
}
