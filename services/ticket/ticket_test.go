package ticket_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/idempotency"
	"github.com/sysops-squad/sysops/internal/svc"
	"github.com/sysops-squad/sysops/internal/svctest"
	"github.com/sysops-squad/sysops/services/location"
	"github.com/sysops-squad/sysops/services/ticket"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

func newTicket(zip string) map[string]string {
	return map[string]string{"customer_id": "c1", "description": "printer jams", "priority": "high", "skill": "printer", "zip": zip}
}

func TestTicketAPI(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env := svctest.New(t, d, location.Spec(), ticket.SpecWith(ticket.Config{ZipRefresh: 50 * time.Millisecond}))
		base := env.URL(ticket.Name)

		r := svctest.Do(t, "POST", base+"/tickets", newTicket("10001"))
		if r.Status != 201 {
			t.Fatalf("open: %d %s", r.Status, r.Body)
		}
		var tk ticket.Ticket
		r.Decode(t, &tk)
		if tk.Status != "open" || tk.Priority != "high" || tk.Zip != "10001" {
			t.Errorf("opened %+v", tk)
		}

		svctest.WantError(t, "unknown zip", svctest.Do(t, "POST", base+"/tickets", newTicket("00000")), 400, `"zip"`, "unknown zip code")
		bad := newTicket("10001")
		bad["priority"] = "urgent"
		svctest.WantError(t, "bad priority", svctest.Do(t, "POST", base+"/tickets", bad), 400, `"priority"`, "urgent")
		bad = newTicket("1000")
		bad["skill"] = "plumbing"
		svctest.WantError(t, "bad skill and zip", svctest.Do(t, "POST", base+"/tickets", bad), 400, `"skill"`, `"zip"`)

		status := func(s string) svctest.Response {
			return svctest.Do(t, "POST", base+"/tickets/"+tk.ID+"/status", map[string]string{"status": s})
		}
		svctest.WantError(t, "open -> completed", status("completed"), 409, "cannot become completed")
		if r := status("assigned"); r.Status != 200 || r.JSON(t)["status"] != "assigned" {
			t.Errorf("-> assigned: %d %s", r.Status, r.Body)
		}
		// Another request for the move made already is refused: of two
		// workflows racing on one ticket, one makes each move.
		svctest.WantError(t, "assigned again", status("assigned"), 409, "already assigned")
		// The same request repeated with its key gets its answer again.
		done := svctest.Do(t, "POST", base+"/tickets/"+tk.ID+"/status", map[string]string{"status": "completed"}, "Idempotency-Key", "done-1")
		again := svctest.Do(t, "POST", base+"/tickets/"+tk.ID+"/status", map[string]string{"status": "completed"}, "Idempotency-Key", "done-1")
		if done.Status != 200 || done.JSON(t)["status"] != "completed" || again.Status != 200 || again.Header.Get(idempotency.ReplayedHeader) != "true" {
			t.Errorf("-> completed: %d %s, repeated with its key: %d %s", done.Status, done.Body, again.Status, again.Body)
		}
		svctest.WantError(t, "completed by another request", status("completed"), 409, "already completed")
		svctest.WantError(t, "completed -> open", status("open"), 409, "completed")
		svctest.WantError(t, "bad status", status("done"), 400, `"status"`)

		var list struct{ Tickets []ticket.Ticket }
		svctest.Do(t, "GET", base+"/tickets?customer_id=c1&status=completed", nil).Decode(t, &list)
		if len(list.Tickets) != 1 || list.Tickets[0].ID != tk.ID {
			t.Errorf("completed tickets of c1 = %+v", list.Tickets)
		}
		svctest.WantError(t, "unknown ticket", svctest.Do(t, "GET", base+"/tickets/nope", nil), 404, "nope")
	})
}

// TestWorksWhileLocationIsDown: ticket validates zip codes from its own
// replicated copy, so stopping location stops nothing.
func TestWorksWhileLocationIsDown(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env := svctest.New(t, d, location.Spec(), ticket.SpecWith(ticket.Config{ZipRefresh: 50 * time.Millisecond}))
		base := env.URL(ticket.Name)
		if r := svctest.Do(t, "POST", base+"/tickets", newTicket("94103")); r.Status != 201 {
			t.Fatalf("with location up: %d %s", r.Status, r.Body)
		}
		env.Stop(location.Name)
		if resp, err := http.Get(env.URL(location.Name) + "/healthz"); err == nil {
			resp.Body.Close()
			t.Fatal("location still answers")
		}
		time.Sleep(200 * time.Millisecond) // several failed refreshes
		for _, zip := range []string{"94103", "60601", "10001"} {
			if r := svctest.Do(t, "POST", base+"/tickets", newTicket(zip)); r.Status != 201 {
				t.Errorf("zip %s with location down: %d %s", zip, r.Status, r.Body)
			}
		}
		svctest.WantError(t, "unknown zip, location down", svctest.Do(t, "POST", base+"/tickets", newTicket("00000")), 400, "unknown zip")
		env.Restart(location.Name)
		if r := svctest.Do(t, "POST", base+"/tickets", newTicket("10001")); r.Status != 201 {
			t.Errorf("after location came back: %d %s", r.Status, r.Body)
		}
	})
}

// TestChosenIDsAndEarlyCancel: what a saga needs of a participant — an
// action repeated is applied once, and a compensation that overtakes its
// action makes the late action be refused.
func TestChosenIDsAndEarlyCancel(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env := svctest.New(t, d, location.Spec(), ticket.SpecWith(ticket.Config{ZipRefresh: 50 * time.Millisecond}))
		base := env.URL(ticket.Name)
		body := newTicket("10001")
		body["id"] = "tk-1"
		if r := svctest.Do(t, "POST", base+"/tickets", body); r.Status != 201 || r.JSON(t)["id"] != "tk-1" {
			t.Fatalf("create with id: %d %s", r.Status, r.Body)
		}
		if r := svctest.Do(t, "POST", base+"/tickets", body); r.Status != 200 {
			t.Errorf("create again: %d %s, want 200 with the same ticket", r.Status, r.Body)
		}
		other := newTicket("10001")
		other["id"], other["customer_id"] = "tk-1", "someone-else"
		svctest.WantError(t, "id of another customer's ticket", svctest.Do(t, "POST", base+"/tickets", other), 409, "another customer")

		// Cancel before create: the late create is refused.
		if r := svctest.Do(t, "POST", base+"/tickets/tk-2/cancel", nil); r.Status != 200 || r.JSON(t)["status"] != "cancelled" {
			t.Errorf("cancel before create: %d %s", r.Status, r.Body)
		}
		late := newTicket("10001")
		late["id"] = "tk-2"
		svctest.WantError(t, "create after cancel", svctest.Do(t, "POST", base+"/tickets", late), 409, "cancelled before it was created")

		for range 2 { // cancelling twice is the same as once
			if r := svctest.Do(t, "POST", base+"/tickets/tk-1/cancel", nil); r.Status != 200 || r.JSON(t)["status"] != "cancelled" {
				t.Errorf("cancel: %d %s", r.Status, r.Body)
			}
		}
	})
}

func TestBatch(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env := svctest.New(t, d, location.Spec(), ticket.SpecWith(ticket.Config{ZipRefresh: 50 * time.Millisecond}))
		base := env.URL(ticket.Name)
		client := svc.NewClient(svc.NewPeers(env.Peers()), ticket.Name)
		ctx := context.Background()
		if r := svctest.Do(t, "POST", base+"/tickets/gone/cancel", nil); r.Status != 200 {
			t.Fatalf("tombstone: %d %s", r.Status, r.Body)
		}
		withID := func(id, customer string) map[string]string {
			tk := newTicket("10001")
			tk["id"], tk["customer_id"] = id, customer
			return tk
		}
		open := []svc.BatchCall{
			{Key: "o1", Path: "/tickets", Body: withID("t1", "c1")},
			{Key: "o2", Path: "/tickets", Body: withID("t2", "c1")},
			{Key: "o3", Path: "/tickets", Body: withID("t1", "c1")}, // t1 again: the ticket as opened
			{Key: "o4", Path: "/tickets", Body: withID("t1", "c9")}, // t1 for another customer
			{Key: "o5", Path: "/tickets", Body: newTicket("00000")},
			{Key: "o6", Path: "/tickets", Body: withID("gone", "c1")},
		}
		answers, errs, err := client.PostBatch(ctx, open)
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range []sysops.ErrorCode{"", "", "", sysops.EConflict, sysops.EInvalid, sysops.EConflict} {
			if got := sysops.CodeOf(errs[i]); errs[i] != nil && got != want || errs[i] == nil && want != "" {
				t.Errorf("open call %d: %v, want %q", i, errs[i], want)
			}
		}
		var t1, t1again ticket.Ticket
		if json.Unmarshal(answers[0], &t1) != nil || json.Unmarshal(answers[2], &t1again) != nil || t1.ID != "t1" || t1again != t1 {
			t.Errorf("t1 opened as %s, then %s", answers[0], answers[2])
		}
		// Alone, a repeated key gets the batch's answer; a ticket is there
		// once, with one event.
		r := svctest.Do(t, "POST", base+"/tickets", withID("t2", "c1"), "Idempotency-Key", "o2/ticket/tickets")
		if r.Status != 201 || r.Header.Get(idempotency.ReplayedHeader) != "true" {
			t.Errorf("o2 alone: %d %s, want the batch's 201 replayed", r.Status, r.Body)
		}
		var list struct{ Tickets []ticket.Ticket }
		svctest.Do(t, "GET", base+"/tickets?customer_id=c1", nil).Decode(t, &list)
		if len(list.Tickets) != 2 {
			t.Errorf("tickets of c1: %+v, want t1 and t2", list.Tickets)
		}

		move := func(key, id, status string) svc.BatchCall {
			return svc.BatchCall{Key: key, Path: "/tickets/" + id + "/status", Body: map[string]string{"status": status}}
		}
		answers, errs, err = client.PostBatch(ctx, []svc.BatchCall{
			move("s1", "t1", "assigned"),
			move("s2", "t2", "assigned"),
			move("s3", "t2", "completed"), // after the one before, in the same batch
			move("s4", "t1", "assigned"),  // moved by s1: refused
			move("s5", "nope", "assigned"),
			move("s6", "t1", "done"),
			move("s7", "t1", "cancelled"), // two statuses lead there: looked at alone
		})
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range []string{"assigned", "assigned", "completed", "conflict", "not_found", "invalid", "cancelled"} {
			var got ticket.Ticket
			switch {
			case errs[i] != nil:
				if string(sysops.CodeOf(errs[i])) != want {
					t.Errorf("status call %d: %v, want %s", i, errs[i], want)
				}
			case json.Unmarshal(answers[i], &got) != nil || got.Status != want:
				t.Errorf("status call %d: %s, want %s", i, answers[i], want)
			}
		}
		if r := svctest.Do(t, "GET", base+"/tickets/t2", nil); r.JSON(t)["status"] != "completed" {
			t.Errorf("t2 = %s", r.Body)
		}

		// A call without a body (a cancel) has the key of the same call
		// made alone: repeated alone, it is replayed, not refused as
		// another request.
		_, errs, err = client.PostBatch(ctx, []svc.BatchCall{{Key: "c1", Path: "/tickets/t9/cancel"}})
		if err != nil || errs[0] != nil {
			t.Fatalf("cancel t9 in a batch: %v %v", err, errs)
		}
		if r := svctest.Do(t, "POST", base+"/tickets/t9/cancel", nil, "Idempotency-Key", "c1/ticket/tickets/t9/cancel"); r.Status != 200 ||
			r.Header.Get(idempotency.ReplayedHeader) != "true" {
			t.Errorf("the same cancel alone: %d %s, want the batch's answer replayed", r.Status, r.Body)
		}

		// Cancels in a batch: from each status that allows it, twice in
		// one batch, one that came before its open, one too late.
		if _, errs, err := client.PostBatch(ctx, []svc.BatchCall{
			{Key: "o7", Path: "/tickets", Body: withID("t3", "c1")},
			{Key: "o8", Path: "/tickets", Body: withID("t4", "c1")},
		}); err != nil || errs[0] != nil || errs[1] != nil {
			t.Fatalf("open t3, t4: %v %v", err, errs)
		}
		if _, errs, err := client.PostBatch(ctx, []svc.BatchCall{move("s8", "t4", "assigned")}); err != nil || errs[0] != nil {
			t.Fatalf("assign t4: %v %v", err, errs)
		}
		cancelCall := func(key, id string) svc.BatchCall { return svc.BatchCall{Key: key, Path: "/tickets/" + id + "/cancel"} }
		answers, errs, err = client.PostBatch(ctx, []svc.BatchCall{
			cancelCall("x1", "t4"),  // assigned
			cancelCall("x2", "t3"),  // open
			cancelCall("x3", "t3"),  // the same ticket, another call
			cancelCall("x4", "t10"), // not opened yet
			cancelCall("x5", "t2"),  // completed: too late
			cancelCall("x6", "t9"),  // cancelled already
		})
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range []string{"cancelled", "cancelled", "cancelled", "cancelled", "conflict", "cancelled"} {
			var got ticket.Ticket
			switch {
			case errs[i] != nil:
				if string(sysops.CodeOf(errs[i])) != want {
					t.Errorf("cancel call %d: %v, want %s", i, errs[i], want)
				}
			case json.Unmarshal(answers[i], &got) != nil || got.Status != want:
				t.Errorf("cancel call %d: %s, want %s", i, answers[i], want)
			}
		}
		svctest.WantError(t, "open after a batch's cancel", svctest.Do(t, "POST", base+"/tickets", withID("t10", "c1")), 409,
			"cancelled before it was created")
		db, err := sqldb.Open(ctx, env.DatabaseURL(ticket.Name))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		// One event per change: t3 opened and cancelled once, t4 opened,
		// assigned and cancelled, t2 (past cancelling) no more than it had.
		for id, want := range map[string]int{"t3": 2, "t4": 3, "t2": 3} {
			var n int
			if err := db.QueryRowContext(ctx, `SELECT last_seq FROM outbox_aggregate WHERE aggregate_type = 'ticket' AND aggregate_id = $1`,
				id).Scan(&n); err != nil || n != want {
				t.Errorf("events of %s: %d (%v), want %d", id, n, err, want)
			}
		}
	})
}
