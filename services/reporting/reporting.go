// Package reporting is the Reporting service: read-only views composed
// from the owners' APIs. It owns no table and writes nothing; it asks
// ticket, assignment, customer and survey for their data at request time.
//
//	GET /reports/summary              tickets by status and priority, experts' load, survey ratings
//	GET /reports/customers/{id}       a customer with their tickets and surveys
package reporting

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"log/slog"

	"github.com/sysops-squad/sysops/internal/host"
	"github.com/sysops-squad/sysops/internal/svc"
)

// Name is the service's name.
const Name = "reporting"

// Spec describes the service to its host.
func Spec() host.Spec {
	return host.Spec{
		Name: Name, Streams: svc.Streams(Name),
		Start: func(ctx context.Context, deps host.Deps) (http.Handler, error) {
			return New(deps.Peers, deps.Logger).Handler(), nil
		},
	}
}

// Service is the Reporting service.
type Service struct {
	ticket, assignment, customer, survey *svc.Client
	logger                               *slog.Logger
}

// New returns the service calling its peers.
func New(peers svc.Peers, logger *slog.Logger) *Service {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Service{logger: logger, ticket: svc.NewClient(peers, "ticket"), assignment: svc.NewClient(peers, "assignment"),
		customer: svc.NewClient(peers, "customer"), survey: svc.NewClient(peers, "survey")}
}

// Summary is the state of the squad's work.
type Summary struct {
	Tickets struct {
		Total      int            `json:"total"`
		ByStatus   map[string]int `json:"by_status"`
		ByPriority map[string]int `json:"by_priority"`
	} `json:"tickets"`
	Experts     []ExpertLoad `json:"experts"`
	GeneratedAt time.Time    `json:"generated_at"`
}

// ExpertLoad is an expert's open assignments against their capacity.
type ExpertLoad struct {
	ID              string   `json:"id"`
	Name            string   `json:"name"`
	Skills          []string `json:"skills"`
	Zip             string   `json:"zip"`
	Capacity        int      `json:"capacity"`
	OpenAssignments int      `json:"open_assignments"`
}

// Summary composes the summary from ticket's and assignment's APIs.
func (s *Service) Summary(ctx context.Context) (Summary, error) {
	var out Summary
	var tickets struct {
		Tickets []struct {
			Status   string `json:"status"`
			Priority string `json:"priority"`
		} `json:"tickets"`
	}
	if err := s.ticket.Get(ctx, "/tickets?limit=1000", &tickets); err != nil {
		return out, err
	}
	out.Tickets.ByStatus, out.Tickets.ByPriority = map[string]int{}, map[string]int{}
	for _, t := range tickets.Tickets {
		out.Tickets.Total++
		out.Tickets.ByStatus[t.Status]++
		out.Tickets.ByPriority[t.Priority]++
	}
	var experts struct {
		Experts []ExpertLoad `json:"experts"`
	}
	if err := s.assignment.Get(ctx, "/experts", &experts); err != nil {
		return out, err
	}
	out.Experts = experts.Experts
	out.GeneratedAt = time.Now().UTC()
	return out, nil
}

// CustomerReport is a customer with their tickets and surveys, as the
// owners return them.
type CustomerReport struct {
	Customer    any       `json:"customer"`
	Tickets     any       `json:"tickets"`
	Surveys     any       `json:"surveys"`
	GeneratedAt time.Time `json:"generated_at"`
}

// Customer composes one customer's report.
func (s *Service) Customer(ctx context.Context, id string) (CustomerReport, error) {
	var out CustomerReport
	esc := url.QueryEscape(id)
	if err := s.customer.Get(ctx, "/customers/"+url.PathEscape(id), &out.Customer); err != nil {
		return out, err
	}
	var tickets struct {
		Tickets any `json:"tickets"`
	}
	if err := s.ticket.Get(ctx, "/tickets?customer_id="+esc, &tickets); err != nil {
		return out, err
	}
	var surveys struct {
		Surveys any `json:"surveys"`
	}
	if err := s.survey.Get(ctx, "/surveys?customer_id="+esc, &surveys); err != nil {
		return out, err
	}
	out.Tickets, out.Surveys, out.GeneratedAt = tickets.Tickets, surveys.Surveys, time.Now().UTC()
	return out, nil
}

// Handler returns the service's HTTP API.
func (s *Service) Handler() http.Handler {
	rt := svc.NewRouter(s.logger)
	rt.Handle("GET /reports/summary", svc.Respond(http.StatusOK, func(r *http.Request) (any, error) {
		return s.Summary(r.Context())
	}))
	rt.Handle("GET /reports/customers/{id}", svc.Respond(http.StatusOK, func(r *http.Request) (any, error) {
		return s.Customer(r.Context(), r.PathValue("id"))
	}))
	return rt
}
