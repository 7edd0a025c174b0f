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
func Check(ctx context.Context, peerURLs map[string]string) ([]string, error) {
	peers := svc.NewPeers(peerURLs)
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

// CheckRegistrations checks, for the given customers (registered by the
// register-customer workflow), that profile, support plan and billing
// account agree: an active customer whose profile shows a plan has exactly
// one active contract and an open billing account; a closed one (a
// compensated registration) or one whose plan was cancelled has neither.
func CheckRegistrations(ctx context.Context, peerURLs map[string]string, customerIDs []string) ([]string, error) {
	peers := svc.NewPeers(peerURLs)
	customers, contracts, billing := svc.NewClient(peers, "customer"), svc.NewClient(peers, "contract"), svc.NewClient(peers, "billing")
	var problems []string
	for _, id := range customerIDs {
		var cu struct {
			Status      string `json:"status"`
			SupportPlan string `json:"support_plan"`
		}
		if err := customers.Get(ctx, "/customers/"+url.PathEscape(id), &cu); err != nil {
			if sysops.CodeOf(err) == sysops.ENotFound {
				continue // never registered (its saga was refused at the first step)
			}
			return nil, err
		}
		var ks struct {
			Contracts []struct {
				Status string `json:"status"`
			} `json:"contracts"`
		}
		if err := contracts.Get(ctx, "/contracts?customer_id="+url.QueryEscape(id), &ks); err != nil {
			return nil, err
		}
		active := 0
		for _, k := range ks.Contracts {
			if k.Status == "active" {
				active++
			}
		}
		var acct struct {
			Status string `json:"status"`
		}
		accountStatus := "none"
		if err := billing.Get(ctx, "/accounts?customer_id="+url.QueryEscape(id), &acct); err == nil {
			accountStatus = acct.Status
		} else if sysops.CodeOf(err) != sysops.ENotFound {
			return nil, err
		}
		switch {
		case cu.Status == "active" && cu.SupportPlan != "" && (active != 1 || accountStatus != "open"):
			problems = append(problems, fmt.Sprintf("customer %s on plan %s has %d active contracts and billing account %s", id, cu.SupportPlan, active, accountStatus))
		case (cu.Status == "closed" || cu.SupportPlan == "") && (active != 0 || accountStatus == "open"):
			problems = append(problems, fmt.Sprintf("customer %s (%s, no plan) has %d active contracts and billing account %s", id, cu.Status, active, accountStatus))
		}
	}
	return problems, nil
}
