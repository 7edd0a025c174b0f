// Package seed loads a demo data set into a running Sysops Squad through
// its public API only — so every row is written by the service that owns
// it, exactly as a client's would be. Every request carries an
// Idempotency-Key derived from what it creates, so seeding twice changes
// nothing the second time.
package seed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// Stats counts what the data set holds after seeding.
type Stats struct {
	Customers, Experts, Tickets          int
	Open, Assigned, Completed, Cancelled int
	// Refused counts tickets the system turned down: with sagas, a ticket
	// no expert can take is compensated (cancelled) at once.
	Refused                         int
	SurveysAnswered, PlansCancelled int
}

func (s Stats) String() string {
	return fmt.Sprintf("%d customers (%d plans cancelled), %d experts, %d tickets (%d open, %d assigned, %d completed, %d cancelled, %d refused), %d surveys answered",
		s.Customers, s.PlansCancelled, s.Experts, s.Tickets, s.Open, s.Assigned, s.Completed, s.Cancelled, s.Refused, s.SurveysAnswered)
}

var experts = []struct {
	name, zip string
	skills    []string
	capacity  int
}{
	{"Grace Hopper", "10001", []string{"software", "hardware"}, 5},
	{"Alan Turing", "07102", []string{"hardware", "printer"}, 4},
	{"Barbara Liskov", "02127", []string{"software", "network"}, 4},
	{"Ken Thompson", "19103", []string{"network", "hardware"}, 3},
	{"Frances Allen", "60602", []string{"software", "printer"}, 4},
	{"Dennis Ritchie", "77002", []string{"hardware", "network"}, 3},
	{"Radia Perlman", "75201", []string{"network"}, 5},
	{"Margaret Hamilton", "78702", []string{"software", "hardware"}, 3},
	{"Donald Knuth", "80203", []string{"printer", "software"}, 3},
	{"Adele Goldberg", "90036", []string{"software", "network"}, 4},
	{"John McCarthy", "94114", []string{"hardware", "printer", "network"}, 4},
	{"Lynn Conway", "98105", []string{"mobile", "hardware"}, 1},
}

var customers = []struct{ name, zip string }{
	{"Ada Byron", "10128"}, {"Charles Babbage", "07102"}, {"Hedy Lamarr", "02127"}, {"Claude Shannon", "19103"},
	{"Katherine Johnson", "21201"}, {"John von Neumann", "22201"}, {"Mary Jackson", "28203"}, {"Edsger Dijkstra", "31401"},
	{"Joan Clarke", "32202"}, {"Tim Berners-Lee", "37902"}, {"Annie Easley", "44308"}, {"Vint Cerf", "60602"},
	{"Evelyn Boyd", "60540"}, {"Bob Kahn", "50309"}, {"Sophie Wilson", "68508"}, {"Guido van Rossum", "77002"},
	{"Karen Jones", "78702"}, {"Larry Page", "80203"}, {"Shafi Goldwasser", "90036"}, {"Whitfield Diffie", "98105"},
}

var problems = []struct{ skill, text string }{
	{"printer", "Printer jams on every duplex job"},
	{"network", "Office wifi drops every few minutes"},
	{"software", "Accounting package crashes at start"},
	{"hardware", "Laptop will not power on"},
	{"mobile", "Phone will not sync mail"},
	{"software", "Email client stuck on 'updating'"},
	{"network", "VPN disconnects after login"},
	{"hardware", "Monitor flickers after sleep"},
}

var priorities = []string{"low", "medium", "high", "critical"}
var plans = []string{"basic", "standard", "premium"}

// Run seeds the system whose public API is at api (e.g.
// http://127.0.0.1:8080) and returns what it holds.
func Run(ctx context.Context, api string) (Stats, error) {
	c := &client{api: strings.TrimSuffix(api, "/"), http: &http.Client{Timeout: 30 * time.Second}}
	var st Stats
	for i, e := range experts {
		email := strings.ToLower(strings.ReplaceAll(e.name, " ", ".")) + "@sysops.example"
		if _, err := c.post(ctx, "/api/experts", fmt.Sprint("seed/expert/", i), map[string]any{"name": e.name, "email": email,
			"skills": e.skills, "zip": e.zip, "capacity": e.capacity}); err != nil {
			return st, err
		}
		st.Experts++
	}
	ids := make([]string, len(customers))
	for i, cu := range customers {
		email := strings.ToLower(strings.ReplaceAll(cu.name, " ", ".")) + "@example.com"
		out, err := c.post(ctx, "/api/customers", fmt.Sprint("seed/customer/", i), map[string]any{"name": cu.name, "email": email,
			"zip": cu.zip, "plan": plans[i%len(plans)]})
		if err != nil {
			return st, err
		}
		var reg struct {
			Customer struct{ ID string } `json:"customer"`
		}
		if err := json.Unmarshal(out, &reg); err != nil {
			return st, fmt.Errorf("seed: register %s: %w", cu.name, err)
		}
		ids[i] = reg.Customer.ID
		st.Customers++
	}
	for n := range 40 {
		ci := (n * 7) % len(customers)
		p := problems[n%len(problems)]
		out, err := c.post(ctx, "/api/tickets", fmt.Sprint("seed/ticket/", n), map[string]any{"customer_id": ids[ci],
			"description": p.text, "priority": priorities[n%len(priorities)], "skill": p.skill, "zip": customers[ci].zip})
		if he, ok := errors.AsType[*httpError](err); ok && he.status == http.StatusConflict {
			st.Tickets++
			st.Refused++ // no expert free: the saga compensated
			continue
		}
		if err != nil {
			return st, err
		}
		st.Tickets++
		var tv struct {
			Ticket struct{ ID, Status string } `json:"ticket"`
		}
		if err := json.Unmarshal(out, &tv); err != nil {
			return st, fmt.Errorf("seed: ticket %d: %w", n, err)
		}
		status := tv.Ticket.Status
		switch {
		case status == "assigned" && n%3 == 0:
			out, err := c.post(ctx, "/api/tickets/"+tv.Ticket.ID+"/complete", fmt.Sprint("seed/complete/", n),
				map[string]any{"notes": "Fixed on site: " + strings.ToLower(p.text)})
			if err != nil {
				return st, err
			}
			status = "completed"
			var done struct {
				SurveyID string `json:"survey_id"`
			}
			if err := json.Unmarshal(out, &done); err != nil {
				return st, fmt.Errorf("seed: complete ticket %d: %w", n, err)
			}
			if n%2 == 0 {
				if _, err := c.post(ctx, "/api/surveys/"+done.SurveyID+"/response", fmt.Sprint("seed/survey/", n),
					map[string]any{"rating": 3 + n%3, "comment": "Thanks, all good now"}); err != nil {
					return st, err
				}
				st.SurveysAnswered++
			}
		case n%7 == 5:
			if _, err := c.post(ctx, "/api/tickets/"+tv.Ticket.ID+"/cancel", fmt.Sprint("seed/cancel/", n), nil); err != nil {
				return st, err
			}
			status = "cancelled"
		}
		switch status {
		case "open":
			st.Open++
		case "assigned":
			st.Assigned++
		case "completed":
			st.Completed++
		case "cancelled":
			st.Cancelled++
		}
	}
	for _, i := range []int{17, 19} {
		if _, err := c.post(ctx, "/api/customers/"+ids[i]+"/cancel-plan", fmt.Sprint("seed/cancel-plan/", i),
			map[string]any{"reason": "moving to another provider"}); err != nil {
			return st, err
		}
		st.PlansCancelled++
	}
	return st, nil
}

type client struct {
	api  string
	http *http.Client
}

func (c *client) post(ctx context.Context, path, key string, body any) ([]byte, error) {
	var rd io.Reader = http.NoBody
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.api+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	req.Header.Set("X-Actor", "seed")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("seed: POST %s: %w (is `sysops up` running?)", path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		return nil, &httpError{status: resp.StatusCode, msg: fmt.Sprintf("seed: POST %s: %s: %s", path, resp.Status, bytes.TrimSpace(out))}
	}
	return out, nil
}

type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }
