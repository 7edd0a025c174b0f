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

// TestCancellationByOp: a cancellation that names its op (a saga's step)
// is made by that op alone, and its compensation undoes that op's
// cancellation only — never another request's — and, arriving first,
// makes the late cancellation be refused.
func TestCancellationByOp(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env := svctest.New(t, d, contract.Spec())
		base := env.URL(contract.Name)
		register := func(customer string) string {
			t.Helper()
			var k contract.Contract
			r := svctest.Do(t, "POST", base+"/contracts", map[string]string{"customer_id": customer, "plan": "premium"})
			r.Decode(t, &k)
			if r.Status != 201 {
				t.Fatalf("register: %d %s", r.Status, r.Body)
			}
			return k.ID
		}
		cancel := func(id, op string) svctest.Response {
			return svctest.Do(t, "POST", base+"/contracts/"+id+"/cancel", map[string]string{"reason": "r", "op_id": op})
		}
		reinstate := func(id, op string) svctest.Response {
			return svctest.Do(t, "POST", base+"/contracts/"+id+"/reinstate", map[string]string{"op_id": op})
		}
		status := func(id string) any { return svctest.Do(t, "GET", base+"/contracts/"+id, nil).JSON(t)["status"] }

		k := register("c1")
		if r := cancel(k, "a"); r.Status != 200 || r.JSON(t)["status"] != "cancelled" {
			t.Fatalf("cancel by a: %d %s", r.Status, r.Body)
		}
		if r := cancel(k, "a"); r.Status != 200 {
			t.Errorf("cancel by a again: %d %s", r.Status, r.Body)
		}
		svctest.WantError(t, "cancel by b", cancel(k, "b"), 409, "already cancelled")
		// b's compensation: b cancelled nothing, so a's cancellation stays.
		if r := reinstate(k, "b"); r.Status != 200 || status(k) != "cancelled" {
			t.Errorf("reinstate by b: %d %s, contract %v; want a's cancellation kept", r.Status, r.Body, status(k))
		}
		if r := reinstate(k, "a"); r.Status != 200 || status(k) != "active" {
			t.Errorf("reinstate by a: %d %s, contract %v; want it active", r.Status, r.Body, status(k))
		}
		if r := reinstate(k, "a"); r.Status != 200 || status(k) != "active" {
			t.Errorf("reinstate by a again: %d %s, contract %v", r.Status, r.Body, status(k))
		}
		svctest.WantError(t, "cancel by a after its compensation", cancel(k, "a"), 409, "undone before it arrived")
		svctest.WantError(t, "cancel by b after its compensation", cancel(k, "b"), 409, "undone before it arrived")

		// The compensation overtakes its action: nothing to undo, and the
		// late action is refused; another op may cancel.
		k2 := register("c2")
		if r := reinstate(k2, "c"); r.Status != 200 || status(k2) != "active" {
			t.Errorf("reinstate before the cancel: %d %s", r.Status, r.Body)
		}
		svctest.WantError(t, "the late cancel", cancel(k2, "c"), 409, "undone before it arrived")
		if r := cancel(k2, "d"); r.Status != 200 || status(k2) != "cancelled" {
			t.Errorf("cancel by d: %d %s", r.Status, r.Body)
		}
		// A cancel naming no op changes nothing on a cancelled contract.
		if r := svctest.Do(t, "POST", base+"/contracts/"+k2+"/cancel", `{}`); r.Status != 200 {
			t.Errorf("cancel without op: %d %s", r.Status, r.Body)
		}

		// The customer took another plan meanwhile: the cancellation
		// cannot be undone.
		k3 := register("c3")
		if r := cancel(k3, "e"); r.Status != 200 {
			t.Fatalf("cancel by e: %d %s", r.Status, r.Body)
		}
		register("c3")
		svctest.WantError(t, "reinstate with another plan", reinstate(k3, "e"), 409, "another active support plan")

		svctest.WantError(t, "reinstate naming no op", svctest.Do(t, "POST", base+"/contracts/"+k+"/reinstate", `{}`), 400, `"op_id"`)
		svctest.WantError(t, "reinstate an unknown contract", reinstate("nope", "f"), 404, "nope")
		svctest.WantError(t, "cancel an unknown contract by op", cancel("nope", "g"), 404, "nope")
	})
}
