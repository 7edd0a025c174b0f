// Package invariant checks, through the owners' APIs, the cross-service
// invariants that the consistency patterns must keep: every customer's
// open_tickets equals the number of their open (open or assigned)
// tickets, and every open ticket has exactly one live assignment.
package invariant

import (
	"context"
	"fmt"
	"net/url"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/internal/svc"
)

// Check returns every violation it finds (none: nil), or an error when an
// owner cannot be asked.
func Check(ctx context.Context, peers map[string]string) ([]string, error) {
	customers, tickets, assignments := svc.NewClient(peers, "customer"), svc.NewClient(peers, "ticket"), svc.NewClient(peers, "assignment")
	var cs struct {
		Customers []struct {
			ID          string `json:"id"`
			OpenTickets int    `json:"open_tickets"`
		} `json:"customers"`
	}
	if err := customers.Get(ctx, "/customers?limit=1000", &cs); err != nil {
		return nil, err
	}
	var ts struct {
		Tickets []struct {
			ID         string `json:"id"`
			CustomerID string `json:"customer_id"`
			Status     string `json:"status"`
		} `json:"tickets"`
	}
	if err := tickets.Get(ctx, "/tickets?limit=1000", &ts); err != nil {
		return nil, err
	}
	var problems []string
	open := map[string]int{}
	for _, t := range ts.Tickets {
		if t.Status != "open" && t.Status != "assigned" {
			var a struct {
				Status string `json:"status"`
			}
			err := assignments.Get(ctx, "/assignments/"+url.PathEscape(t.ID), &a)
			if err == nil && a.Status == "assigned" {
				problems = append(problems, fmt.Sprintf("ticket %s is %s but still assigned", t.ID, t.Status))
			}
			continue
		}
		open[t.CustomerID]++
		var a struct {
			Status string `json:"status"`
		}
		err := assignments.Get(ctx, "/assignments/"+url.PathEscape(t.ID), &a)
		switch {
		case sysops.CodeOf(err) == sysops.ENotFound:
			problems = append(problems, fmt.Sprintf("open ticket %s has no assignment", t.ID))
		case err != nil:
			return nil, err
		case a.Status != "assigned":
			problems = append(problems, fmt.Sprintf("open ticket %s has its assignment %s", t.ID, a.Status))
		}
	}
	for _, c := range cs.Customers {
		if c.OpenTickets != open[c.ID] {
			problems = append(problems, fmt.Sprintf("customer %s counts %d open tickets, has %d", c.ID, c.OpenTickets, open[c.ID]))
		}
	}
	return problems, nil
}
