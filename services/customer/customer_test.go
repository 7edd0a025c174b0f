package customer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/internal/svc"
	"github.com/sysops-squad/sysops/internal/svctest"
	"github.com/sysops-squad/sysops/services/customer"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

func TestCustomerAPI(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env := svctest.New(t, d, customer.Spec())
		base := env.URL(customer.Name)

		r := svctest.Do(t, "POST", base+"/customers", map[string]any{"name": "Ada Lovelace", "email": "Ada@Example.com", "zip": "10001"})
		if r.Status != http.StatusCreated {
			t.Fatalf("register: %d %s", r.Status, r.Body)
		}
		var c customer.Customer
		r.Decode(t, &c)
		if c.ID == "" || c.Email != "ada@example.com" || c.OpenTickets != 0 || r.Header.Get("Location") != "/customers/"+c.ID {
			t.Errorf("registered %+v (Location %q)", c, r.Header.Get("Location"))
		}
		var got customer.Customer
		svctest.Do(t, "GET", base+"/customers/"+c.ID, nil).Decode(t, &got)
		if got != c {
			t.Errorf("get = %+v, want %+v", got, c)
		}

		svctest.WantError(t, "same email", svctest.Do(t, "POST", base+"/customers",
			map[string]any{"name": "Other", "email": "ada@example.com", "zip": "10001"}), 409, "already registered")
		svctest.WantError(t, "unknown customer", svctest.Do(t, "GET", base+"/customers/nobody", nil), 404, "nobody")
		svctest.WantError(t, "bad fields", svctest.Do(t, "POST", base+"/customers",
			map[string]any{"name": "", "email": "not-mail", "zip": "1"}), 400, `"name"`, `"email"`, `"zip"`)
		svctest.WantError(t, "unknown field", svctest.Do(t, "POST", base+"/customers",
			`{"name":"A","email":"a@b.co","zip":"10001","vip":true}`), 400, `"vip"`)
		svctest.WantError(t, "wrong type", svctest.Do(t, "POST", base+"/customers",
			`{"name":7,"email":"a@b.co","zip":"10001"}`), 400, `"name"`, "string")
		svctest.WantError(t, "oversized body", svctest.Do(t, "POST", base+"/customers",
			`{"name":"`+strings.Repeat("x", 2<<20)+`"}`), 400, "exceeds")
		svctest.WantError(t, "no route", svctest.Do(t, "GET", base+"/nothing", nil), 404, "no route")
		svctest.WantError(t, "wrong method", svctest.Do(t, "DELETE", base+"/customers/"+c.ID, nil), 405, "DELETE")
		svctest.WantError(t, "bad limit", svctest.Do(t, "GET", base+"/customers?limit=0", nil), 400, "limit")

		adjust := func(delta int, key string) svctest.Response {
			return svctest.Do(t, "POST", base+"/customers/"+c.ID+"/open-tickets", map[string]int{"delta": delta}, "Idempotency-Key", key)
		}
		adjust(1, "t1")
		adjust(1, "t1") // a repeat: applied once
		if r := adjust(1, "t2"); r.JSON(t)["open_tickets"] != 2.0 {
			t.Errorf("after two increments (one repeated): %s", r.Body)
		}
		adjust(-1, "t3")
		adjust(-1, "t4")
		svctest.WantError(t, "below zero", adjust(-1, "t5"), 409, "no open tickets")
		svctest.WantError(t, "bad delta", adjust(5, "t6"), 400, "delta")
		svctest.WantError(t, "unknown customer", svctest.Do(t, "POST", base+"/customers/nobody/open-tickets",
			map[string]int{"delta": 1}), 404, "nobody")

		var list struct{ Customers []customer.Customer }
		svctest.Do(t, "GET", base+"/customers?email=ADA@example.com", nil).Decode(t, &list)
		if len(list.Customers) != 1 || list.Customers[0].ID != c.ID {
			t.Errorf("list by email = %+v", list.Customers)
		}
	})
}

// withCustomer starts the service and registers customer id with it; it
// returns the service's URL and the registration's body.
func withCustomer(t *testing.T, d sqldb.Dialect, id string) (string, map[string]any) {
	t.Helper()
	env := svctest.New(t, d, customer.Spec())
	base := env.URL(customer.Name)
	body := map[string]any{"id": id, "name": "Ada", "email": "ada@example.com", "zip": "10001"}
	if r := svctest.Do(t, "POST", base+"/customers", body); r.Status != 201 {
		t.Fatalf("register with id: %d %s", r.Status, r.Body)
	}
	return base, body
}

// TestSagaParticipant: changes keyed by an op id apply once and undo once;
// an undo that overtakes its change voids it; a profile closed before it
// was registered stays unregistered.
func TestSagaParticipant(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		base, body := withCustomer(t, d, "cu-1")
		if r := svctest.Do(t, "POST", base+"/customers", body); r.Status != 200 {
			t.Errorf("register again: %d %s", r.Status, r.Body)
		}
		count := func() float64 {
			v, _ := svctest.Do(t, "GET", base+"/customers/cu-1", nil).JSON(t)["open_tickets"].(float64)
			return v
		}
		op := func(delta int, id string) svctest.Response {
			return svctest.Do(t, "POST", base+"/customers/cu-1/open-tickets", map[string]any{"delta": delta, "op_id": id})
		}
		undo := func(id string) svctest.Response {
			return svctest.Do(t, "POST", base+"/customers/cu-1/open-tickets/"+id+"/undo", nil)
		}
		op(1, "a")
		op(1, "a")
		op(1, "b")
		if n := count(); n != 2 {
			t.Errorf("after a, a, b: %v, want 2", n)
		}
		undo("a")
		undo("a")
		if n := count(); n != 1 {
			t.Errorf("after undoing a twice: %v, want 1", n)
		}
		if r := undo("c"); r.Status != 200 {
			t.Errorf("undo before the change: %d %s", r.Status, r.Body)
		}
		svctest.WantError(t, "change after its undo", op(1, "c"), 409, "undone before it arrived")
		if n := count(); n != 1 {
			t.Errorf("after the voided change: %v, want 1", n)
		}

		if r := svctest.Do(t, "POST", base+"/customers/cu-1/close", nil); r.Status != 200 || r.JSON(t)["status"] != "closed" {
			t.Errorf("close: %d %s", r.Status, r.Body)
		}
		if r := svctest.Do(t, "POST", base+"/customers/cu-2/close", nil); r.Status != 200 {
			t.Errorf("close before register: %d %s", r.Status, r.Body)
		}
		svctest.WantError(t, "register after close", svctest.Do(t, "POST", base+"/customers",
			map[string]any{"id": "cu-2", "name": "Bo", "email": "bo@example.com", "zip": "10001"}), 409, "closed before it was registered")
	})
}

// TestConcurrentOpsAndUndos: an op, its repeat and its undo racing each
// other leave the count as if the op never happened — applied once and
// undone once, or voided and then refused — however they interleave.
func TestConcurrentOpsAndUndos(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		base, _ := withCustomer(t, d, "cu-r")
		post := func(path string, body any) (int, error) {
			b, _ := json.Marshal(body)
			resp, err := http.Post(base+path, "application/json", bytes.NewReader(b))
			if err != nil {
				return 0, err
			}
			resp.Body.Close()
			return resp.StatusCode, nil
		}
		// 10 ops applied for good, so that an undo applied twice shows.
		for i := range 10 {
			if st, err := post("/customers/cu-r/open-tickets", map[string]any{"delta": 1, "op_id": fmt.Sprint("keep-", i)}); err != nil || st != 200 {
				t.Fatalf("op keep-%d: %d %v", i, st, err)
			}
		}
		var wg sync.WaitGroup
		for i := range 20 {
			id := fmt.Sprint("race-", i)
			for k := range 4 {
				wg.Go(func() {
					var st int
					var err error
					if k%2 == 0 {
						st, err = post("/customers/cu-r/open-tickets", map[string]any{"delta": 1, "op_id": id})
						if st == http.StatusConflict {
							st = 200 // refused: its undo came first
						}
					} else {
						st, err = post("/customers/cu-r/open-tickets/"+id+"/undo", nil)
					}
					if err != nil || st != 200 {
						t.Errorf("%s request %d: %d %v", id, k, st, err)
					}
				})
			}
		}
		wg.Wait()
		var cu customer.Customer
		svctest.Do(t, "GET", base+"/customers/cu-r", nil).Decode(t, &cu)
		if cu.OpenTickets != 10 {
			t.Errorf("open tickets = %d after 20 ops raced with their repeats and undos, want 10", cu.OpenTickets)
		}
	})
}

// TestAdjustBatch: counts in a batch apply once each, in op order for
// one customer; a call refused after it wrote leaves nothing.
func TestAdjustBatch(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env := svctest.New(t, d, customer.Spec())
		base := env.URL(customer.Name)
		for _, id := range []string{"c1", "c2", "c3"} {
			body := map[string]any{"id": id, "name": "Ada", "email": id + "@example.com", "zip": "10001"}
			if r := svctest.Do(t, "POST", base+"/customers", body); r.Status != 201 {
				t.Fatalf("register %s: %d %s", id, r.Status, r.Body)
			}
		}
		if r := svctest.Do(t, "POST", base+"/customers/c1/open-tickets/v/undo", nil); r.Status != 200 {
			t.Fatalf("void op v: %d %s", r.Status, r.Body)
		}
		op := func(key, customer, opID string, delta int) svc.BatchCall {
			return svc.BatchCall{Key: key, Path: "/customers/" + customer + "/open-tickets", Body: map[string]any{"delta": delta, "op_id": opID}}
		}
		client := svc.NewClient(svc.NewPeers(env.Peers()), customer.Name)
		answers, errs, err := client.PostBatch(context.Background(), []svc.BatchCall{
			op("k1", "c1", "b", 1),
			op("k2", "c1", "a", 1),
			op("k3", "c2", "c", 1),
			op("k4", "c1", "a", 1),     // op a again: applied before
			op("k5", "nobody", "d", 1), // refused: no such customer
			op("k6", "c1", "e", -1),    // taken off, one by one
			op("k7", "c1", "v", 1),     // undone before it arrived
			op("k8", "c2", "f", 2),     // invalid
		})
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range []string{"2", "1", "1", "2", "not_found", "1", "conflict", "invalid"} {
			var cu customer.Customer
			switch {
			case errs[i] != nil:
				if string(sysops.CodeOf(errs[i])) != want {
					t.Errorf("call %d: %v, want %s", i, errs[i], want)
				}
			case json.Unmarshal(answers[i], &cu) != nil || fmt.Sprint(cu.OpenTickets) != want:
				t.Errorf("call %d: %s, want open_tickets %s", i, answers[i], want)
			}
		}
		for id, want := range map[string]float64{"c1": 1, "c2": 1} {
			if got := svctest.Do(t, "GET", base+"/customers/"+id, nil).JSON(t)["open_tickets"]; got != want {
				t.Errorf("%s open_tickets = %v, want %v", id, got, want)
			}
		}
		// The refused call's op was not kept: undoing it now voids it.
		db, err := sqldb.Open(context.Background(), env.DatabaseURL(customer.Name))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var n int
		if err := db.QueryRowContext(context.Background(), `SELECT count(*) FROM open_tickets_op WHERE op_id = 'd'`).Scan(&n); err != nil || n != 0 {
			t.Errorf("op d of the refused call: %d rows, %v; want none", n, err)
		}

		// Undos in a batch. c3 gets two ops, undone together; c1 has 1
		// open ticket and two +1 ops (a, b) and a -1 op (e): a and b
		// together would take it below zero, so they are undone one by
		// one in op order, and b is refused as it would be alone.
		if _, errs, err := client.PostBatch(context.Background(), []svc.BatchCall{op("k9", "c3", "g", 1), op("k10", "c3", "h", 1)}); err != nil ||
			errs[0] != nil || errs[1] != nil {
			t.Fatalf("count c3 twice: %v %v", err, errs)
		}
		events := func() map[string]int {
			out := map[string]int{}
			for _, id := range []string{"c1", "c2", "c3"} {
				var n int
				if err := db.QueryRowContext(context.Background(), `SELECT last_seq FROM outbox_aggregate
					WHERE aggregate_type = 'customer' AND aggregate_id = $1`, id).Scan(&n); err != nil {
					t.Fatal(err)
				}
				out[id] = n
			}
			return out
		}
		before := events()
		undo := func(key, customer, opID string) svc.BatchCall {
			return svc.BatchCall{Key: key, Path: "/customers/" + customer + "/open-tickets/" + opID + "/undo"}
		}
		answers, errs, err = client.PostBatch(context.Background(), []svc.BatchCall{
			undo("u1", "c2", "c"),
			undo("u2", "c1", "b"),
			undo("u3", "c1", "a"),
			undo("u4", "c3", "h"),
			undo("u5", "c1", "a"), // again: finds it undone
			undo("u6", "c1", "e"),
			undo("u7", "c2", "z"), // never arrived: voided
			undo("u8", "c3", "g"),
		})
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range []string{"0", "conflict", "0", "0", "1", "1", "0", "1"} {
			var cu customer.Customer
			switch {
			case errs[i] != nil:
				if string(sysops.CodeOf(errs[i])) != want {
					t.Errorf("undo %d: %v, want %s", i, errs[i], want)
				}
			case json.Unmarshal(answers[i], &cu) != nil || fmt.Sprint(cu.OpenTickets) != want:
				t.Errorf("undo %d: %s, want open_tickets %s", i, answers[i], want)
			}
		}
		for id, want := range map[string]float64{"c1": 1, "c2": 0, "c3": 0} {
			if got := svctest.Do(t, "GET", base+"/customers/"+id, nil).JSON(t)["open_tickets"]; got != want {
				t.Errorf("after the undos, %s open_tickets = %v, want %v", id, got, want)
			}
		}
		// One event per change: c1's a and e, c2's c, c3's g and h.
		after := events()
		for id, want := range map[string]int{"c1": 2, "c2": 1, "c3": 2} {
			if got := after[id] - before[id]; got != want {
				t.Errorf("%s: %d events from the undos, want %d", id, got, want)
			}
		}
		svctest.WantError(t, "count after its undo", svctest.Do(t, "POST", base+"/customers/c2/open-tickets",
			map[string]any{"delta": 1, "op_id": "z"}), 409, "undone before it arrived")
		var state string
		if err := db.QueryRowContext(context.Background(), `SELECT state FROM open_tickets_op WHERE op_id = 'b'`).Scan(&state); err != nil ||
			state != "applied" {
			t.Errorf("op b, whose undo was refused: %s %v, want applied", state, err)
		}
	})
}

// TestDatabaseRefusingWrites: while the service's database refuses
// writes (a PostgreSQL primary demoted in a failover), a write answers
// 503 with the JSON error "unavailable", so that callers retry it, with
// or without an Idempotency-Key, and reads go on; afterwards the same
// request succeeds.
func TestDatabaseRefusingWrites(t *testing.T) {
	env, refuse := svctest.NewRefusing(t, customer.Spec())
	base := env.URL(customer.Name)
	r := svctest.Do(t, "POST", base+"/customers", map[string]any{"name": "Ada Lovelace", "email": "ada@example.com", "zip": "10001"})
	if r.Status != http.StatusCreated {
		t.Fatalf("register: %d %s", r.Status, r.Body)
	}
	var ada customer.Customer
	r.Decode(t, &ada)

	refuse(true)
	grace := map[string]any{"name": "Grace Hopper", "email": "grace@example.com", "zip": "10001"}
	r = svctest.Do(t, "POST", base+"/customers", grace)
	svctest.WantError(t, "write without a key", r, 503, "database")
	if r.Header.Get("Retry-After") == "" {
		t.Error("a 503 for a database refusing writes has no Retry-After")
	}
	svctest.WantError(t, "write with a key", svctest.Do(t, "POST", base+"/customers", grace, "Idempotency-Key", "g1"), 503, "database")
	if r := svctest.Do(t, "GET", base+"/customers/"+ada.ID, nil); r.Status != http.StatusOK {
		t.Errorf("read while the database refuses writes: %d %s", r.Status, r.Body)
	}
	refuse(false)
	if r := svctest.Do(t, "POST", base+"/customers", grace, "Idempotency-Key", "g1"); r.Status != http.StatusCreated {
		t.Errorf("the same write once the database takes writes: %d %s", r.Status, r.Body)
	}
}
