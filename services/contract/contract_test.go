package contract_test

import (
	"testing"

	"github.com/sysops-squad/sysops/internal/svctest"
	"github.com/sysops-squad/sysops/services/contract"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

func TestContractAPI(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env := svctest.New(t, d, contract.Spec())
		base := env.URL(contract.Name)

		r := svctest.Do(t, "POST", base+"/contracts", map[string]string{"customer_id": "c1", "plan": "premium"})
		if r.Status != 201 {
			t.Fatalf("register: %d %s", r.Status, r.Body)
		}
		var k contract.Contract
		r.Decode(t, &k)
		if k.Status != "active" || k.Plan != "premium" || k.CustomerID != "c1" {
			t.Errorf("registered %+v", k)
		}
		svctest.WantError(t, "second active plan", svctest.Do(t, "POST", base+"/contracts",
			map[string]string{"customer_id": "c1", "plan": "basic"}), 409, "already has an active")
		svctest.WantError(t, "bad plan", svctest.Do(t, "POST", base+"/contracts",
			map[string]string{"customer_id": "c2", "plan": "gold"}), 400, `"plan"`, "gold")
		svctest.WantError(t, "no customer", svctest.Do(t, "POST", base+"/contracts",
			map[string]string{"plan": "basic"}), 400, `"customer_id"`)

		r = svctest.Do(t, "POST", base+"/contracts/"+k.ID+"/cancel", map[string]string{"reason": "moving away"})
		var cancelled contract.Contract
		r.Decode(t, &cancelled)
		if r.Status != 200 || cancelled.Status != "cancelled" || cancelled.CancelledAt == nil || cancelled.CancelReason != "moving away" {
			t.Errorf("cancel: %d %s", r.Status, r.Body)
		}
		if r := svctest.Do(t, "POST", base+"/contracts/"+k.ID+"/cancel", `{}`); r.Status != 200 || r.JSON(t)["cancel_reason"] != "moving away" {
			t.Errorf("cancel twice: %d %s, want the first cancellation unchanged", r.Status, r.Body)
		}
		// Cancelling an id never registered tombstones it.
		if r := svctest.Do(t, "POST", base+"/contracts/k-early/cancel", `{}`); r.Status != 200 {
			t.Errorf("cancel before register: %d %s", r.Status, r.Body)
		}
		svctest.WantError(t, "register after cancel", svctest.Do(t, "POST", base+"/contracts",
			map[string]string{"id": "k-early", "customer_id": "c9", "plan": "basic"}), 409, "cancelled before it was registered")
		if r := svctest.Do(t, "POST", base+"/contracts", map[string]string{"id": "k-2", "customer_id": "c8", "plan": "basic"}); r.Status != 201 {
			t.Errorf("register with id: %d %s", r.Status, r.Body)
		}
		if r := svctest.Do(t, "POST", base+"/contracts", map[string]string{"id": "k-2", "customer_id": "c8", "plan": "basic"}); r.Status != 200 {
			t.Errorf("register the same id again: %d %s", r.Status, r.Body)
		}

		// After cancelling, a new plan may start.
		if r := svctest.Do(t, "POST", base+"/contracts", map[string]string{"customer_id": "c1", "plan": "basic"}); r.Status != 201 {
			t.Errorf("new plan after cancel: %d %s", r.Status, r.Body)
		}
		var list struct{ Contracts []contract.Contract }
		svctest.Do(t, "GET", base+"/contracts?customer_id=c1", nil).Decode(t, &list)
		if len(list.Contracts) != 2 || list.Contracts[0].Plan != "basic" || list.Contracts[1].Status != "cancelled" {
			t.Errorf("contracts of c1 = %+v", list.Contracts)
		}
		svctest.WantError(t, "list without customer", svctest.Do(t, "GET", base+"/contracts", nil), 400, "customer_id")
	})
}
