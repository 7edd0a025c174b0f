package reporting_test

import (
	"testing"
	"time"

	"github.com/sysops-squad/sysops/internal/svctest"
	"github.com/sysops-squad/sysops/services/assignment"
	"github.com/sysops-squad/sysops/services/customer"
	"github.com/sysops-squad/sysops/services/location"
	"github.com/sysops-squad/sysops/services/reporting"
	"github.com/sysops-squad/sysops/services/survey"
	"github.com/sysops-squad/sysops/services/ticket"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

func TestReports(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		fast := 50 * time.Millisecond
		env := svctest.New(t, d, location.Spec(), customer.Spec(), ticket.SpecWith(ticket.Config{ZipRefresh: fast}),
			assignment.SpecWith(assignment.Config{ZipRefresh: fast}), survey.Spec(), reporting.Spec())
		var c customer.Customer
		svctest.Do(t, "POST", env.URL("customer")+"/customers", map[string]string{"name": "Ada", "email": "ada@example.com", "zip": "10001"}).Decode(t, &c)
		svctest.Do(t, "POST", env.URL("assignment")+"/experts", map[string]any{"name": "Hugo", "email": "h@example.com",
			"skills": []string{"network"}, "zip": "07030", "capacity": 2})
		for _, p := range []string{"low", "high", "high"} {
			if r := svctest.Do(t, "POST", env.URL("ticket")+"/tickets", map[string]string{"customer_id": c.ID, "description": "x",
				"priority": p, "skill": "network", "zip": "10001"}); r.Status != 201 {
				t.Fatalf("ticket: %d %s", r.Status, r.Body)
			}
		}
		var sum reporting.Summary
		r := svctest.Do(t, "GET", env.URL(reporting.Name)+"/reports/summary", nil)
		r.Decode(t, &sum)
		if r.Status != 200 || sum.Tickets.Total != 3 || sum.Tickets.ByPriority["high"] != 2 || sum.Tickets.ByStatus["open"] != 3 ||
			len(sum.Experts) != 1 || sum.Experts[0].Capacity != 2 {
			t.Errorf("summary: %d %s", r.Status, r.Body)
		}
		r = svctest.Do(t, "GET", env.URL(reporting.Name)+"/reports/customers/"+c.ID, nil)
		var rep struct {
			Customer struct{ ID string }
			Tickets  []any
			Surveys  []any
		}
		r.Decode(t, &rep)
		if r.Status != 200 || rep.Customer.ID != c.ID || len(rep.Tickets) != 3 || rep.Surveys == nil {
			t.Errorf("customer report: %d %s", r.Status, r.Body)
		}
		svctest.WantError(t, "unknown customer", svctest.Do(t, "GET", env.URL(reporting.Name)+"/reports/customers/nope", nil), 404, "nope")
		// An owner down: the report says which.
		env.Stop("assignment")
		svctest.WantError(t, "assignment down", svctest.Do(t, "GET", env.URL(reporting.Name)+"/reports/summary", nil), 503, "assignment")
	})
}
