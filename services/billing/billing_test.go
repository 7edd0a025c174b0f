package billing_test

import (
	"testing"
	"time"

	"github.com/sysops-squad/sysops/internal/svctest"
	"github.com/sysops-squad/sysops/services/billing"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

func TestProrated(t *testing.T) {
	paid := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		now  time.Time
		want int
	}{
		{paid, 3000},
		{paid.Add(time.Hour), 2900}, // 29 whole days left
		{paid.Add(15 * 24 * time.Hour), 1500},
		{paid.Add(30 * 24 * time.Hour), 0},
		{paid.Add(-time.Hour), 3000},
	} {
		if got := billing.Prorated(3000, paid, c.now); got != c.want {
			t.Errorf("Prorated(3000, %v later) = %d, want %d", c.now.Sub(paid), got, c.want)
		}
	}
}

func TestBillingAPI(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env := svctest.New(t, d, billing.Spec())
		base := env.URL(billing.Name)

		r := svctest.Do(t, "POST", base+"/accounts", map[string]string{"customer_id": "c1", "plan": "standard"})
		if r.Status != 201 {
			t.Fatalf("open: %d %s", r.Status, r.Body)
		}
		var a billing.Account
		r.Decode(t, &a)
		if a.Status != "open" || a.MonthlyFeeCents != 4900 || len(a.Charges) != 1 || a.BalanceCents != 4900 {
			t.Errorf("opened %+v", a)
		}
		svctest.WantError(t, "second account", svctest.Do(t, "POST", base+"/accounts",
			map[string]string{"customer_id": "c1", "plan": "basic"}), 409, "already has")
		svctest.WantError(t, "bad plan", svctest.Do(t, "POST", base+"/accounts",
			map[string]string{"customer_id": "c2", "plan": "free"}), 400, `"plan"`)

		var byCustomer billing.Account
		svctest.Do(t, "GET", base+"/accounts?customer_id=c1", nil).Decode(t, &byCustomer)
		if byCustomer.ID != a.ID {
			t.Errorf("account of c1 = %s, want %s", byCustomer.ID, a.ID)
		}

		r = svctest.Do(t, "POST", base+"/accounts/"+a.ID+"/close", nil)
		var closed billing.Account
		r.Decode(t, &closed)
		// Closed the moment it opened: 29 or 30 whole days are refunded.
		if r.Status != 200 || closed.Status != "closed" || len(closed.Charges) != 2 || closed.Charges[1].AmountCents > -4736 {
			t.Errorf("close: %d %s", r.Status, r.Body)
		}
		if r := svctest.Do(t, "POST", base+"/accounts/"+a.ID+"/close", nil); r.Status != 200 || len(r.JSON(t)["charges"].([]any)) != 2 {
			t.Errorf("close twice: %d %s, want no second refund", r.Status, r.Body)
		}
		if r := svctest.Do(t, "POST", base+"/accounts/a-early/close", nil); r.Status != 200 {
			t.Errorf("close before open: %d %s", r.Status, r.Body)
		}
		svctest.WantError(t, "open after close", svctest.Do(t, "POST", base+"/accounts",
			map[string]string{"id": "a-early", "customer_id": "c7", "plan": "basic"}), 409, "closed before it was opened")
		svctest.WantError(t, "unknown account", svctest.Do(t, "GET", base+"/accounts/nope", nil), 404, "nope")
	})
}
