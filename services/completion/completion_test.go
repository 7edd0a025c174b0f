package completion_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sysops-squad/sysops/internal/svctest"
	"github.com/sysops-squad/sysops/services/assignment"
	"github.com/sysops-squad/sysops/services/completion"
	"github.com/sysops-squad/sysops/services/customer"
	"github.com/sysops-squad/sysops/services/location"
	"github.com/sysops-squad/sysops/services/survey"
	"github.com/sysops-squad/sysops/services/ticket"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

// world sets up a customer with n assigned tickets through the services'
// own APIs.
func world(t *testing.T, d sqldb.Dialect, n int) (*svctest.Env, string, []string) {
	t.Helper()
	fast := 50 * time.Millisecond
	env := svctest.New(t, d, location.Spec(), customer.Spec(), ticket.SpecWith(ticket.Config{ZipRefresh: fast}),
		assignment.SpecWith(assignment.Config{ZipRefresh: fast}), survey.Spec(), completion.Spec())
	var c customer.Customer
	svctest.Do(t, "POST", env.URL("customer")+"/customers", map[string]string{"name": "Ada", "email": "ada@example.com", "zip": "10001"}).Decode(t, &c)
	if r := svctest.Do(t, "POST", env.URL("assignment")+"/experts", map[string]any{"name": "Hugo", "email": "hugo@example.com",
		"skills": []string{"printer"}, "zip": "07030", "capacity": 10}); r.Status != 201 {
		t.Fatalf("expert: %d %s", r.Status, r.Body)
	}
	var tickets []string
	for range n {
		var tk ticket.Ticket
		r := svctest.Do(t, "POST", env.URL("ticket")+"/tickets", map[string]string{"customer_id": c.ID, "description": "jam",
			"priority": "low", "skill": "printer", "zip": "10001"})
		if r.Status != 201 {
			t.Fatalf("ticket: %d %s", r.Status, r.Body)
		}
		r.Decode(t, &tk)
		svctest.Do(t, "POST", env.URL("customer")+"/customers/"+c.ID+"/open-tickets", map[string]int{"delta": 1})
		if r := svctest.Do(t, "POST", env.URL("assignment")+"/assignments", map[string]string{"ticket_id": tk.ID, "skill": "printer", "zip": "10001"}); r.Status != 201 {
			t.Fatalf("assign: %d %s", r.Status, r.Body)
		}
		svctest.Do(t, "POST", env.URL("ticket")+"/tickets/"+tk.ID+"/status", map[string]string{"status": "assigned"})
		tickets = append(tickets, tk.ID)
	}
	return env, c.ID, tickets
}

func openTickets(t *testing.T, env *svctest.Env, customerID string) float64 {
	t.Helper()
	v, _ := svctest.Do(t, "GET", env.URL("customer")+"/customers/"+customerID, nil).JSON(t)["open_tickets"].(float64)
	return v
}

func TestComplete(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env, cust, tickets := world(t, d, 2)
		base := env.URL(completion.Name)
		r := svctest.Do(t, "POST", base+"/completions", map[string]string{"ticket_id": tickets[0], "notes": "cleared the jam"})
		if r.Status != 201 {
			t.Fatalf("complete: %d %s", r.Status, r.Body)
		}
		var done completion.Completion
		r.Decode(t, &done)
		if done.SurveyID == "" || done.ExpertID == "" || done.CustomerID != cust {
			t.Errorf("completion = %+v", done)
		}
		if st := svctest.Do(t, "GET", env.URL("ticket")+"/tickets/"+tickets[0], nil).JSON(t)["status"]; st != "completed" {
			t.Errorf("ticket status = %v", st)
		}
		if notes := svctest.Do(t, "GET", env.URL("assignment")+"/assignments/"+tickets[0], nil).JSON(t)["completion_notes"]; notes != "cleared the jam" {
			t.Errorf("assignment notes = %v", notes)
		}
		// Delegation: the survey exists in survey's table, sent by survey.
		var sv survey.Survey
		svctest.Do(t, "GET", env.URL("survey")+"/surveys/"+done.SurveyID, nil).Decode(t, &sv)
		if sv.TicketID != tickets[0] || sv.CustomerID != cust || sv.ExpertID != done.ExpertID || sv.Status != "sent" {
			t.Errorf("survey = %+v", sv)
		}
		if n := openTickets(t, env, cust); n != 1 {
			t.Errorf("open tickets = %v, want 1", n)
		}
		// Completing again with the same notes returns the completion;
		// another request, with other notes, is refused. Neither changes
		// anything.
		if r := svctest.Do(t, "POST", base+"/completions", map[string]string{"ticket_id": tickets[0], "notes": "cleared the jam"}); r.Status != 200 {
			t.Errorf("repeat: %d %s", r.Status, r.Body)
		}
		svctest.WantError(t, "another completion", svctest.Do(t, "POST", base+"/completions",
			map[string]string{"ticket_id": tickets[0], "notes": "again"}), 409, "already completed")
		if n := openTickets(t, env, cust); n != 1 {
			t.Errorf("open tickets after a repeat = %v, want 1", n)
		}
		svctest.WantError(t, "no notes", svctest.Do(t, "POST", base+"/completions", map[string]string{"ticket_id": tickets[1]}), 400, `"notes"`)
		svctest.WantError(t, "unknown ticket", svctest.Do(t, "POST", base+"/completions", map[string]string{"ticket_id": "nope", "notes": "x"}), 404, "nope")

		// Answering the survey.
		resp := svctest.Do(t, "POST", env.URL("survey")+"/surveys/"+sv.ID+"/response", map[string]any{"rating": 5, "comment": "quick"})
		if resp.Status != 200 || resp.JSON(t)["status"] != "answered" {
			t.Errorf("answer: %d %s", resp.Status, resp.Body)
		}
		svctest.WantError(t, "answer twice", svctest.Do(t, "POST", env.URL("survey")+"/surveys/"+sv.ID+"/response", map[string]any{"rating": 4}), 409, "answered already")
		svctest.WantError(t, "bad rating", svctest.Do(t, "POST", env.URL("survey")+"/surveys/"+sv.ID+"/response", map[string]any{"rating": 9}), 400, `"rating"`)
	})
}

// TestCompleteAfterSurveyWasDown: a completion that failed part way is
// retried; no step is applied twice.
func TestCompleteAfterSurveyWasDown(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env, cust, tickets := world(t, d, 2)
		base := env.URL(completion.Name)
		env.Stop("survey")
		svctest.WantError(t, "survey down", svctest.Do(t, "POST", base+"/completions",
			map[string]string{"ticket_id": tickets[0], "notes": "done"}), 503, "survey")
		if n := openTickets(t, env, cust); n != 1 {
			t.Fatalf("open tickets after the partial completion = %v, want 1", n)
		}
		env.Restart("survey")
		if r := svctest.Do(t, "POST", base+"/completions", map[string]string{"ticket_id": tickets[0], "notes": "done"}); r.Status != 201 {
			t.Fatalf("retry: %d %s", r.Status, r.Body)
		}
		if n := openTickets(t, env, cust); n != 1 {
			t.Errorf("open tickets after the retry = %v, want 1 (decremented once)", n)
		}
		var list struct{ Surveys []survey.Survey }
		svctest.Do(t, "GET", env.URL("survey")+"/surveys?customer_id="+cust, nil).Decode(t, &list)
		if len(list.Surveys) != 1 {
			t.Errorf("%d surveys, want 1", len(list.Surveys))
		}
	})
}

// TestRacingCompletions: completions of one ticket with different notes,
// sent at once. One completes it; the others are refused (by the ticket
// before they change anything, or once it is recorded). Before, the notes were recorded first and the calls' keys
// derived from the ticket alone: a racer got 400 for reusing a key, or
// left its notes on a ticket cancelled meanwhile.
func TestRacingCompletions(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env, cust, tickets := world(t, d, 1)
		base := env.URL(completion.Name)
		const racers = 4
		answers := make([]svctest.Response, racers)
		var wg sync.WaitGroup
		for i := range racers {
			wg.Go(func() {
				answers[i] = svctest.Do(t, "POST", base+"/completions", map[string]string{"ticket_id": tickets[0], "notes": fmt.Sprint("notes ", i)})
			})
		}
		wg.Wait()
		var winner string
		for i, r := range answers {
			switch r.Status {
			case 201:
				if winner != "" {
					t.Errorf("two completions made: %s and %s", winner, r.Body)
				}
				winner = fmt.Sprint("notes ", i)
			case 409:
			default:
				t.Errorf("completion %d: %d %s, want 201 or 409", i, r.Status, r.Body)
			}
		}
		if winner == "" {
			t.Fatalf("no completion made: %v", answers)
		}
		var done completion.Completion
		svctest.Do(t, "GET", base+"/completions/"+tickets[0], nil).Decode(t, &done)
		notes := svctest.Do(t, "GET", env.URL("assignment")+"/assignments/"+tickets[0], nil).JSON(t)["completion_notes"]
		if done.Notes != winner || notes != winner {
			t.Errorf("completion notes %q, assignment notes %v; want the winner's, %q", done.Notes, notes, winner)
		}
		if n := openTickets(t, env, cust); n != 0 {
			t.Errorf("open tickets = %v, want 0 (counted down once)", n)
		}
	})
}
