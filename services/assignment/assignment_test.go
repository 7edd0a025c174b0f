package assignment_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/internal/svc"
	"github.com/sysops-squad/sysops/internal/svctest"
	"github.com/sysops-squad/sysops/services/assignment"
	"github.com/sysops-squad/sysops/services/location"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

func addExpert(t *testing.T, base, name, zip string, capacity int, skills ...string) assignment.Expert {
	t.Helper()
	r := svctest.Do(t, "POST", base+"/experts", map[string]any{"name": name, "email": name + "@sysops.example",
		"skills": skills, "zip": zip, "capacity": capacity})
	if r.Status != 201 {
		t.Fatalf("add expert %s: %d %s", name, r.Status, r.Body)
	}
	var e assignment.Expert
	r.Decode(t, &e)
	return e
}

func assign(t *testing.T, base, ticket, skill, zip string) svctest.Response {
	t.Helper()
	return svctest.Do(t, "POST", base+"/assignments", map[string]string{"ticket_id": ticket, "skill": skill, "zip": zip, "priority": "high"})
}

func TestAssignment(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env := svctest.New(t, d, location.Spec(), assignment.SpecWith(assignment.Config{ZipRefresh: 50 * time.Millisecond}))
		base := env.URL(assignment.Name)
		chicago := addExpert(t, base, "cara", "60601", 5, "printer", "network")
		hoboken := addExpert(t, base, "hugo", "07030", 1, "printer")
		addExpert(t, base, "sam", "94103", 3, "software")

		svctest.WantError(t, "bad expert", svctest.Do(t, "POST", base+"/experts", map[string]any{"name": "x", "email": "x",
			"skills": []string{"welding"}, "zip": "00000", "capacity": 0}), 400, `"email"`, `"skills"`, `"capacity"`)
		svctest.WantError(t, "expert in unknown zip", svctest.Do(t, "POST", base+"/experts", map[string]any{"name": "x",
			"email": "x@y.example", "skills": []string{"printer"}, "zip": "00000", "capacity": 1}), 400, "unknown zip")

		// A ticket in Manhattan: Hoboken is nearest.
		var a assignment.Assignment
		assign(t, base, "t1", "printer", "10001").Decode(t, &a)
		if a.ExpertID != hoboken.ID || a.Status != "assigned" || a.Expert == nil || a.Expert.OpenAssignments != 1 {
			t.Fatalf("t1 assigned to %+v, want hugo (Hoboken)", a)
		}
		if time.Until(a.ScheduledFor) < 7*time.Hour || time.Until(a.ScheduledFor) > 9*time.Hour {
			t.Errorf("high priority scheduled for %v, want in 8 h", a.ScheduledFor)
		}
		var again assignment.Assignment
		assign(t, base, "t1", "printer", "10001").Decode(t, &again)
		if again.ExpertID != hoboken.ID || again.Expert.OpenAssignments != 1 {
			t.Errorf("repeat assignment changed it: %+v", again)
		}
		// Hugo is full: the next Manhattan ticket goes to Chicago.
		assign(t, base, "t2", "printer", "10002").Decode(t, &a)
		if a.ExpertID != chicago.ID {
			t.Errorf("t2 assigned to %s, want cara (Chicago)", a.ExpertID)
		}
		svctest.WantError(t, "no mobile expert", assign(t, base, "t3", "mobile", "10001"), 409, "mobile")

		// Releasing frees capacity; completing keeps the notes.
		if r := svctest.Do(t, "POST", base+"/assignments/t1/release", nil); r.Status != 200 || r.JSON(t)["status"] != "released" {
			t.Errorf("release: %d %s", r.Status, r.Body)
		}
		assign(t, base, "t4", "printer", "10001").Decode(t, &a)
		if a.ExpertID != hoboken.ID {
			t.Errorf("after release t4 went to %s, want hugo", a.ExpertID)
		}
		r := svctest.Do(t, "POST", base+"/assignments/t4/complete", map[string]string{"notes": "replaced the fuser"})
		if r.Status != 200 || r.JSON(t)["completion_notes"] != "replaced the fuser" {
			t.Errorf("complete: %d %s", r.Status, r.Body)
		}
		if r := svctest.Do(t, "POST", base+"/assignments/t4/complete", map[string]string{"notes": "replaced the fuser"}); r.Status != 200 {
			t.Errorf("repeat complete: %d %s", r.Status, r.Body)
		}
		svctest.WantError(t, "release completed", svctest.Do(t, "POST", base+"/assignments/t4/release", nil), 409, "completed")
		svctest.WantError(t, "complete without notes", svctest.Do(t, "POST", base+"/assignments/t2/complete", `{}`), 400, `"notes"`)
		svctest.WantError(t, "unknown ticket", svctest.Do(t, "GET", base+"/assignments/none", nil), 404, "none")

		var e assignment.Expert
		svctest.Do(t, "GET", base+"/experts/"+hoboken.ID, nil).Decode(t, &e)
		if e.OpenAssignments != 0 {
			t.Errorf("hugo has %d open assignments after release and completion, want 0", e.OpenAssignments)
		}
		var list struct{ Assignments []assignment.Assignment }
		svctest.Do(t, "GET", base+"/assignments?expert_id="+hoboken.ID, nil).Decode(t, &list)
		if len(list.Assignments) != 2 {
			t.Errorf("hugo's assignments = %d, want 2", len(list.Assignments))
		}

		// An expert added now, nearer than everyone, takes the next
		// ticket at once (the zips of each skill are re-read).
		nina := addExpert(t, base, "nina", "10001", 1, "printer")
		assign(t, base, "t6", "printer", "10001").Decode(t, &a)
		if a.ExpertID != nina.ID {
			t.Errorf("t6 assigned to %s, want nina, added just before", a.ExpertID)
		}
	})
}

// TestAssignsWhileLocationIsDown: distances come from assignment's own
// copy of the zip codes.
func TestAssignsWhileLocationIsDown(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env := svctest.New(t, d, location.Spec(), assignment.SpecWith(assignment.Config{ZipRefresh: 50 * time.Millisecond}))
		base := env.URL(assignment.Name)
		addExpert(t, base, "cara", "60601", 10, "network")
		near := addExpert(t, base, "nina", "11201", 10, "network")
		env.Stop(location.Name)
		time.Sleep(200 * time.Millisecond)
		for i := range 3 {
			var a assignment.Assignment
			r := assign(t, base, fmt.Sprint("t", i), "network", "10003")
			r.Decode(t, &a)
			if r.Status != 201 || a.ExpertID != near.ID {
				t.Errorf("with location down: %d %s", r.Status, r.Body)
			}
		}
		addExpert(t, base, "otto", "94103", 1, "network")
	})
}

// TestReleaseBeforeAssign: a release that overtakes its assignment makes
// the late assignment be refused.
func TestReleaseBeforeAssign(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env := svctest.New(t, d, location.Spec(), assignment.SpecWith(assignment.Config{ZipRefresh: 50 * time.Millisecond}))
		base := env.URL(assignment.Name)
		addExpert(t, base, "hugo", "07030", 3, "printer")
		for range 2 {
			if r := svctest.Do(t, "POST", base+"/assignments/t9/release", nil); r.Status != 200 || r.JSON(t)["status"] != "released" {
				t.Errorf("release before assign: %d %s", r.Status, r.Body)
			}
		}
		svctest.WantError(t, "assign after release", assign(t, base, "t9", "printer", "10001"), 409, "released before it was assigned")
		var e []assignment.Expert
		var list struct{ Experts []assignment.Expert }
		svctest.Do(t, "GET", base+"/experts", nil).Decode(t, &list)
		e = list.Experts
		if len(e) != 1 || e[0].OpenAssignments != 0 {
			t.Errorf("experts = %+v", e)
		}
	})
}

// TestAssignSpreadsOverEquallyNearExperts: among experts equally near the
// ticket, the least loaded gets it; on PostgreSQL one whose row a
// concurrent assignment holds is passed over rather than waited for, but
// a nearer expert is still waited for rather than given up for a farther
// one.
func TestAssignSpreadsOverEquallyNearExperts(t *testing.T) {
	ctx := context.Background()
	env := svctest.New(t, sqldb.Postgres, location.Spec(), assignment.SpecWith(assignment.Config{ZipRefresh: 50 * time.Millisecond}))
	base := env.URL(assignment.Name)
	ann := addExpert(t, base, "ann", "10001", 10, "printer")
	bob := addExpert(t, base, "bob", "10001", 10, "printer")
	far := addExpert(t, base, "fay", "60601", 10, "printer")
	db, err := sqldb.Open(ctx, env.DatabaseURL(assignment.Name))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	// Least loaded first: ann and bob alternate.
	got := map[string]int{}
	for i := range 4 {
		var a assignment.Assignment
		assign(t, base, fmt.Sprint("even-", i), "printer", "10001").Decode(t, &a)
		got[a.ExpertID]++
	}
	if got[ann.ID] != 2 || got[bob.ID] != 2 {
		t.Fatalf("4 tickets went %v, want 2 each to ann and bob", got)
	}

	// hold locks an expert's row in an open transaction, as a concurrent
	// assignment would.
	hold := func(ids ...string) *sql.Tx {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tx.Rollback() })
		for _, id := range ids {
			if _, err := tx.ExecContext(ctx, `SELECT id FROM expert WHERE id = $1 FOR UPDATE`, id); err != nil {
				t.Fatal(err)
			}
		}
		return tx
	}
	assignAsync := func(ticket string) <-chan assignment.Assignment {
		ch := make(chan assignment.Assignment, 1)
		go func() {
			var a assignment.Assignment
			assign(t, base, ticket, "printer", "10001").Decode(t, &a)
			ch <- a
		}()
		return ch
	}

	// ann is held (and, at equal load, first by id or not): bob gets it
	// while ann is still held.
	tx := hold(ann.ID)
	select {
	case a := <-assignAsync("skip-held"):
		if a.ExpertID != bob.ID {
			t.Errorf("with ann held the ticket went to %s, want bob", a.ExpertID)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("assignment waited for the held expert although an equally near one was free")
	}
	_ = tx.Rollback()

	// Both near experts held: it waits for them, not settling for fay.
	tx = hold(ann.ID, bob.ID)
	ch := assignAsync("wait-near")
	select {
	case a := <-ch:
		t.Fatalf("assigned to %s while both near experts were held; want it to wait for them", a.ExpertID)
	case <-time.After(300 * time.Millisecond):
	}
	_ = tx.Rollback()
	if a := <-ch; a.ExpertID != ann.ID && a.ExpertID != bob.ID {
		t.Errorf("after the near experts were free the ticket went to %s (fay is %s), want ann or bob", a.ExpertID, far.ID)
	}
}

// TestAssignBatch: a batch assigns each ticket once, nearest expert first
// and capacity counted across the batch; refusals take nothing.
func TestAssignBatch(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env := svctest.New(t, d, location.Spec(), assignment.SpecWith(assignment.Config{ZipRefresh: 50 * time.Millisecond}))
		base := env.URL(assignment.Name)
		hoboken := addExpert(t, base, "hugo", "07030", 2, "printer")
		chicago := addExpert(t, base, "cara", "60601", 5, "printer")
		if r := svctest.Do(t, "POST", base+"/assignments/gone/release", nil); r.Status != 200 {
			t.Fatalf("release before assigned: %d %s", r.Status, r.Body)
		}
		ask := func(key, ticket, skill string) svc.BatchCall {
			return svc.BatchCall{Key: key, Path: "/assignments", Body: map[string]string{"ticket_id": ticket, "skill": skill, "zip": "10001"}}
		}
		client := svc.NewClient(svc.NewPeers(env.Peers()), assignment.Name)
		answers, errs, err := client.PostBatch(context.Background(), []svc.BatchCall{
			ask("k1", "t1", "printer"),
			ask("k2", "t2", "printer"),
			ask("k3", "t1", "printer"), // t1 again: its assignment
			ask("k4", "t3", "printer"), // Hoboken is full by now
			ask("k5", "t4", "mobile"),  // nobody
			ask("k6", "gone", "printer"),
			ask("k7", "t5", "plumbing"),
		})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{hoboken.ID, hoboken.ID, hoboken.ID, chicago.ID, "conflict", "conflict", "invalid"}
		got := make([]assignment.Assignment, len(want))
		for i, w := range want {
			switch {
			case errs[i] != nil:
				if string(sysops.CodeOf(errs[i])) != w {
					t.Errorf("call %d: %v, want %s", i, errs[i], w)
				}
			case json.Unmarshal(answers[i], &got[i]) != nil || got[i].ExpertID != w:
				t.Errorf("call %d: %s, want expert %s", i, answers[i], w)
			}
		}
		if !got[0].AssignedAt.Equal(got[2].AssignedAt) || got[0].ExpertID != got[2].ExpertID {
			t.Errorf("t1 twice: %+v and %+v", got[0], got[2])
		}
		for _, e := range []struct {
			expert assignment.Expert
			open   float64
		}{{hoboken, 2}, {chicago, 1}} {
			if r := svctest.Do(t, "GET", base+"/experts/"+e.expert.ID, nil); r.JSON(t)["open_assignments"] != e.open {
				t.Errorf("expert %s: %s, want %v open assignments", e.expert.Name, r.Body, e.open)
			}
		}
		if r := svctest.Do(t, "GET", base+"/assignments/t3", nil); r.Status != 200 || r.JSON(t)["expert_id"] != chicago.ID {
			t.Errorf("t3 stored as %d %s", r.Status, r.Body)
		}

		// Releases in a batch: assigned ones (one twice), one with no
		// assignment (a refused assign), one that came before its assign,
		// one released already.
		release := func(key, ticket string) svc.BatchCall {
			return svc.BatchCall{Key: key, Path: "/assignments/" + ticket + "/release"}
		}
		answers, errs, err = client.PostBatch(context.Background(), []svc.BatchCall{
			release("r1", "t3"),
			release("r2", "t1"),
			release("r3", "t1"),
			release("r4", "t4"), // its assign was refused
			release("r5", "t8"), // not assigned yet
			release("r6", "gone"),
		})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 6 {
			var a assignment.Assignment
			if errs[i] != nil || json.Unmarshal(answers[i], &a) != nil || a.Status != "released" {
				t.Errorf("release %d: %s %v, want released", i, answers[i], errs[i])
			}
		}
		for _, e := range []struct {
			expert assignment.Expert
			open   float64
		}{{hoboken, 1}, {chicago, 0}} {
			if r := svctest.Do(t, "GET", base+"/experts/"+e.expert.ID, nil); r.JSON(t)["open_assignments"] != e.open {
				t.Errorf("after the releases, expert %s: %s, want %v open assignments", e.expert.Name, r.Body, e.open)
			}
		}
		for _, tk := range []string{"t4", "t8"} {
			svctest.WantError(t, "assign "+tk+" after its release", assign(t, base, tk, "printer", "10001"), 409, "released before it was assigned")
		}
	})
}
