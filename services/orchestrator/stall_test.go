package orchestrator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sysops-squad/sysops/internal/svctest"
	"github.com/sysops-squad/sysops/saga"
	"github.com/sysops-squad/sysops/services/assignment"
	"github.com/sysops-squad/sysops/services/customer"
	"github.com/sysops-squad/sysops/services/location"
	"github.com/sysops-squad/sysops/services/ticket"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

// TestStalledOrchestratorIsFenced: an orchestrator that stalls without
// dying (SIGSTOP: a frozen process, a paused VM, a long GC pause) while
// it drives sagas has them taken over by another instance once its leases
// expire. The other instance ends them. When the stalled one wakes, its
// drivers still hold the sagas as they were before the stall and go on
// from there: their calls repeat keys the participants have applied (or
// compensated) already, and their log writes are refused, because the
// lease is no longer theirs. Nothing it does after it wakes may change a
// saga the other ended, or an effect at a participant; what it answers
// its waiting clients must be the outcome the log holds.
//
// PostgreSQL only: several orchestrator instances share one log there.
// A SQLite log is one process's file, and a process stopped inside a
// write would hold every other writer back until it woke.
func TestStalledOrchestratorIsFenced(t *testing.T) {
	d := sqldb.Postgres
	fast := 50 * time.Millisecond
	env := svctest.New(t, d, location.Spec(), customer.Spec(),
		ticket.SpecWith(ticket.Config{ZipRefresh: fast}), assignment.SpecWith(assignment.Config{ZipRefresh: fast}))
	customers := seedCustomers(t, env, "printer")
	// The assignment step is slow, so that the stall finds sagas mid-way.
	peers := map[string]string{"ticket": jittery(t, env.URL("ticket"), 0, 8*time.Millisecond),
		"customer":   jittery(t, env.URL("customer"), 0, 8*time.Millisecond),
		"assignment": jittery(t, env.URL("assignment"), 40*time.Millisecond, 120*time.Millisecond)}
	dbURL := sqldbtest.URL(t, d)
	db := mustOpen(t, dbURL)

	addrA, addrB := freeAddr(t), freeAddr(t)
	a := startRole(t, "orchestrator", dbURL, env.NATS.ClientURL(), addrA, peers)
	b := startRole(t, "orchestrator", dbURL, env.NATS.ClientURL(), addrB, peers)
	for _, p := range []*exec.Cmd{a, b} {
		defer func() {
			_ = p.Process.Signal(syscall.SIGCONT)
			_ = p.Process.Signal(syscall.SIGTERM)
			_ = p.Wait()
		}()
	}

	type answer struct {
		status int
		body   string
	}
	client := &http.Client{Timeout: 60 * time.Second} // outlasts the stall
	const rounds, perRound = 2, 8
	var answers []answer
	takenOver := 0
	for round := range rounds {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range perRound {
			skill := "printer"
			if i%4 == 3 {
				skill = "mobile" // no expert: compensated
			}
			body := fmt.Sprintf(`{"customer_id":%q,"description":"stall %d/%d","priority":"low","skill":%q,"zip":"10001"}`,
				customers[(round+i)%len(customers)], round, i, skill)
			wg.Go(func() {
				resp, err := client.Post("http://"+addrA+"/sagas/create-ticket", "application/json", strings.NewReader(body))
				if err != nil {
					t.Errorf("stalled orchestrator's client: %v", err)
					return
				}
				defer resp.Body.Close()
				raw, _ := io.ReadAll(resp.Body)
				mu.Lock()
				answers = append(answers, answer{resp.StatusCode, string(raw)})
				mu.Unlock()
			})
		}
		time.Sleep(time.Duration(20+rand.IntN(60)) * time.Millisecond)
		if err := a.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		// What A holds as it stalls: sagas leased to it, not ended.
		held := map[string]bool{}
		rows, err := db.QueryContext(context.Background(), `SELECT id FROM saga
			WHERE state IN ('running', 'compensating') AND lease_owner LIKE $1`, "%/http://"+addrA)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			held[id] = true
		}
		if err := rows.Close(); err != nil {
			t.Fatal(err)
		}
		takenOver += len(held)
		// B ends them all while A sleeps.
		before := waitEnded(t, db)
		for id := range held {
			if s := before[id]; !s.State.Final() {
				t.Errorf("saga %s, held by the stalled instance, ended %s: %s", id, s.State, s.LastError)
			}
		}
		if err := a.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		wg.Wait() // every client of A answered: its drivers have woken and given up
		// The stale drivers' calls and writes are done within a step
		// timeout of waking; give them twice that.
		time.Sleep(4 * time.Second)
		after := waitEnded(t, db)
		for id, s := range before {
			if got := after[id]; got.State != s.State || !got.UpdatedAt.Equal(s.UpdatedAt) {
				t.Errorf("saga %s changed after the stalled instance woke: %s at %v, then %s at %v",
					id, s.State, s.UpdatedAt, got.State, got.UpdatedAt)
			}
		}
	}
	t.Logf("%d sagas held by the stalled instance were taken over", takenOver)
	if takenOver == 0 {
		t.Fatal("the stall found no saga mid-way: the test did not test anything")
	}

	// Every answer A gave after it woke is the outcome in the log.
	final := waitEnded(t, db)
	idRE := regexp.MustCompile(`saga ([0-9a-zA-Z_-]+) compensated`)
	for _, an := range answers {
		var out struct {
			SagaID string `json:"saga_id"`
			State  saga.State
		}
		_ = json.Unmarshal([]byte(an.body), &out)
		switch an.status {
		case http.StatusCreated:
			if final[out.SagaID].State != saga.Committed {
				t.Errorf("answered 201 for saga %s, which ended %s", out.SagaID, final[out.SagaID].State)
			}
		case http.StatusConflict:
			m := idRE.FindStringSubmatch(an.body)
			if m == nil || final[m[1]].State != saga.Compensated {
				t.Errorf("answered 409 %s; the log has %+v", an.body, m)
			}
		case http.StatusAccepted: // still running when the wait ran out: any end will do
		default:
			t.Errorf("answered %d %s", an.status, an.body)
		}
	}
	// A is itself again: a saga begun there commits.
	r := svctest.Do(t, "POST", "http://"+addrA+"/sagas/create-ticket", map[string]string{"customer_id": customers[0],
		"description": "after the stall", "priority": "low", "skill": "printer", "zip": "10001"})
	if r.Status != http.StatusCreated {
		t.Errorf("after the stall: %d %s", r.Status, r.Body)
	}
	checkPeers(t, env.Peers())
}

// waitEnded waits until no saga in the log is running or compensating,
// and returns them all by id.
func waitEnded(t *testing.T, db *sqldb.DB) map[string]saga.Saga {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		list, err := saga.List(context.Background(), db, saga.Filter{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		out, unfinished := map[string]saga.Saga{}, 0
		for _, s := range list {
			out[s.ID] = s
			if s.State == saga.Running || s.State == saga.Compensating {
				unfinished++
			}
		}
		if unfinished == 0 {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d sagas still unfinished", unfinished, len(list))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
