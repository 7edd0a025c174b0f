package orchestrator_test

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sysops-squad/sysops/internal/svctest"
	"github.com/sysops-squad/sysops/saga"
	"github.com/sysops-squad/sysops/services/assignment"
	"github.com/sysops-squad/sysops/services/location"
	"github.com/sysops-squad/sysops/services/ticket"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

// TestCrashParticipant kills a participant instead of the orchestrator:
// the customer service runs as its own process and is killed with SIGKILL
// at random moments while create-ticket sagas change its customers'
// open-ticket counts (and compensations change them back), then
// restarted. The orchestrator repeats the calls the kills cut short, with
// their Idempotency-Keys. At the end every saga has ended committed or
// compensated and every customer's count equals their open tickets: a
// change that committed just before a kill, its response never sent, is
// not applied again by the repeat.
func TestCrashParticipant(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		fast := 50 * time.Millisecond
		env := svctest.New(t, d, location.Spec(), ticket.SpecWith(ticket.Config{ZipRefresh: fast}),
			assignment.SpecWith(assignment.Config{ZipRefresh: fast}))
		custAddr, custDB := freeAddr(t), sqldbtest.URL(t, d)
		peers := map[string]string{}
		for name, u := range env.Peers() {
			peers[name] = u
		}
		startCustomer := func() *exec.Cmd { return startRole(t, "customer", custDB, env.NATS.ClientURL(), custAddr, peers) }
		cust := startCustomer()
		defer func() {
			_ = cust.Process.Signal(syscall.SIGTERM)
			_ = cust.Wait()
		}()
		peers["customer"] = "http://" + custAddr

		var customers []string
		for i := range 4 {
			r := svctest.Do(t, "POST", peers["customer"]+"/customers", map[string]string{"name": fmt.Sprint("C", i),
				"email": fmt.Sprintf("c%d@example.com", i), "zip": "10001"})
			customers = append(customers, r.JSON(t)["id"].(string))
		}
		for i := 0; ; i++ { // the assignment service learns its zip codes in the background
			r := svctest.Do(t, "POST", env.URL("assignment")+"/experts", map[string]any{"name": "Big", "email": "big@example.com",
				"skills": []string{"printer"}, "zip": "10002", "capacity": 100})
			if r.Status == http.StatusCreated {
				break
			}
			if i == 100 {
				t.Fatalf("add expert: %d %s", r.Status, r.Body)
			}
			time.Sleep(50 * time.Millisecond)
		}

		orchAddr, orchDB := freeAddr(t), sqldbtest.URL(t, d)
		orch := startRole(t, "orchestrator", orchDB, env.NATS.ClientURL(), orchAddr, peers, crashPatientEnv+"=1")
		defer func() {
			_ = orch.Process.Signal(syscall.SIGTERM)
			_ = orch.Wait()
		}()
		base := "http://" + orchAddr

		client := &http.Client{Timeout: 10 * time.Second}
		const rounds, perRound = 6, 8
		for round := range rounds {
			var wg sync.WaitGroup
			for i := range perRound {
				skill := "printer"
				if i%4 == 3 {
					skill = "mobile" // no expert: the count goes up, then back down
				}
				body := fmt.Sprintf(`{"customer_id":%q,"description":"crash %d/%d","priority":"low","skill":%q,"zip":"10001"}`,
					customers[(round+i)%len(customers)], round, i, skill)
				wg.Go(func() {
					req, _ := http.NewRequest("POST", base+"/sagas/create-ticket", strings.NewReader(body))
					req.Header.Set("Content-Type", "application/json")
					if resp, err := client.Do(req); err == nil {
						resp.Body.Close()
					}
				})
			}
			time.Sleep(time.Duration(rand.IntN(40)) * time.Millisecond)
			_ = cust.Process.Kill() // SIGKILL, mid-flight
			_ = cust.Wait()
			cust = startCustomer()
			wg.Wait()
		}

		sagas := waitFinished(t, base)
		counts, repeated := tally(t, sagas, orchDB, func(st saga.StepRecord) bool { return st.Name == "count-ticket" })
		if len(sagas) != rounds*perRound {
			t.Errorf("%d sagas, want %d", len(sagas), rounds*perRound)
		}
		t.Logf("%d sagas: %d committed, %d compensated; %d called the customer service more than once for one change",
			len(sagas), counts[saga.Committed], counts[saga.Compensated], repeated)
		if repeated == 0 || counts[saga.Committed] == 0 || counts[saga.Compensated] == 0 {
			t.Error("the kills repeated no call, or no saga committed or compensated: the test tested nothing")
		}
		checkPeers(t, peers)
	})
}

// TestCrashTicketOnePerKey: clients open tickets without choosing their
// ids — so the ticket service's only guard against a duplicate is the
// request's Idempotency-Key — and retry each request until it succeeds,
// while the ticket service is killed with SIGKILL at random moments and
// restarted. Each key must yield exactly one ticket: a ticket committed
// just before a kill, its response never sent, is the one the retry gets.
func TestCrashTicketOnePerKey(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env := svctest.New(t, d, location.Spec())
		addr, dbURL := freeAddr(t), sqldbtest.URL(t, d)
		base := "http://" + addr
		start := func() *exec.Cmd { return startRole(t, "ticket", dbURL, env.NATS.ClientURL(), addr, env.Peers()) }
		var mu sync.Mutex // guards proc
		proc := start()
		defer func() {
			mu.Lock()
			defer mu.Unlock()
			_ = proc.Process.Signal(syscall.SIGTERM)
			_ = proc.Wait()
		}()

		client := &http.Client{Timeout: 5 * time.Second}
		// open retries one request until the service answers it 2xx.
		open := func(key string, i int) error {
			body := fmt.Sprintf(`{"customer_id":"c1","description":"kill %d","priority":"low","skill":"printer","zip":"10001"}`, i)
			deadline := time.Now().Add(60 * time.Second)
			for {
				req, _ := http.NewRequest("POST", base+"/tickets", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Idempotency-Key", key)
				resp, err := client.Do(req)
				if err == nil {
					resp.Body.Close()
					switch {
					case resp.StatusCode/100 == 2:
						return nil
					case resp.StatusCode/100 == 4 && resp.StatusCode != http.StatusConflict:
						if !strings.HasPrefix(key, "warm") {
							return fmt.Errorf("%s: %s", key, resp.Status)
						}
					}
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("%s: no success within a minute (last: %v)", key, err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		// The service learns its zip codes in the background: wait for it.
		if err := open("warm-up", -1); err != nil {
			t.Fatal(err)
		}

		const clients, perClient = 4, 60
		done := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, clients*perClient)
		for c := range clients {
			wg.Go(func() {
				for i := range perClient {
					n := c*perClient + i
					if err := open(fmt.Sprintf("kill-%d", n), n); err != nil {
						errs <- err
					}
				}
			})
		}
		kills := 0
		go func() { wg.Wait(); close(done) }()
	killing:
		for kills < 20 {
			select {
			case <-done:
				break killing
			case <-time.After(time.Duration(5+rand.IntN(25)) * time.Millisecond):
			}
			mu.Lock()
			_ = proc.Process.Kill() // SIGKILL, mid-request or not
			_ = proc.Wait()
			proc = start()
			mu.Unlock()
			kills++
		}
		<-done
		close(errs)
		for err := range errs {
			t.Error(err)
		}

		var list struct {
			Tickets []struct{ ID, Description string }
		}
		svctest.Do(t, "GET", base+"/tickets?limit=1000", nil).Decode(t, &list)
		seen := map[string]int{}
		for _, tk := range list.Tickets {
			seen[tk.Description]++
		}
		for i := range clients * perClient {
			if n := seen[fmt.Sprint("kill ", i)]; n != 1 {
				t.Errorf("key kill-%d made %d tickets, want 1", i, n)
			}
		}
		t.Logf("%d tickets opened through %d kills of the ticket service", clients*perClient, kills)
		if kills == 0 {
			t.Error("the service was never killed")
		}
	})
}
