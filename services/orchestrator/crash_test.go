package orchestrator_test

// The crash test: the orchestrator runs as its own process (this test
// binary, re-executed in a role) and is killed with SIGKILL at random
// moments — before, during and after the steps of the sagas it drives —
// and restarted, many times. At the end every saga has ended committed or
// fully compensated, none half-done, and the invariants hold across the
// participants' databases.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sysops-squad/sysops/internal/host"
	"github.com/sysops-squad/sysops/internal/invariant"
	"github.com/sysops-squad/sysops/internal/svctest"
	"github.com/sysops-squad/sysops/saga"
	"github.com/sysops-squad/sysops/services/assignment"
	"github.com/sysops-squad/sysops/services/billing"
	"github.com/sysops-squad/sysops/services/completion"
	"github.com/sysops-squad/sysops/services/contract"
	"github.com/sysops-squad/sysops/services/customer"
	"github.com/sysops-squad/sysops/services/location"
	"github.com/sysops-squad/sysops/services/orchestrator"
	"github.com/sysops-squad/sysops/services/survey"
	"github.com/sysops-squad/sysops/services/ticket"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

const (
	crashRoleEnv  = "ORCH_CRASH_ROLE"
	crashDBEnv    = "ORCH_CRASH_DB"
	crashNATSEnv  = "ORCH_CRASH_NATS"
	crashAddrEnv  = "ORCH_CRASH_ADDR"
	crashPeersEnv = "ORCH_CRASH_PEERS"
	// crashPatientEnv gives the orchestrator a retry budget that outlasts
	// a participant's restart.
	crashPatientEnv = "ORCH_CRASH_PATIENT"
)

func TestMain(m *testing.M) {
	switch os.Getenv(crashRoleEnv) {
	case "orchestrator":
		if err := runOrchestrator(); err != nil {
			fmt.Fprintf(os.Stderr, "orchestrator: %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	case "customer", "ticket":
		spec := customer.Spec()
		if os.Getenv(crashRoleEnv) == "ticket" {
			spec = ticket.Spec()
		}
		if err := runParticipant(spec); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", spec.Name, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runOrchestrator is the orchestrator process of the crash test.
func runOrchestrator() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var peers map[string]string
	if err := json.Unmarshal([]byte(os.Getenv(crashPeersEnv)), &peers); err != nil {
		return err
	}
	attempts := 6
	if os.Getenv(crashPatientEnv) != "" {
		attempts = 40 // outlasts a participant's restart
	}
	cfg := orchestrator.Config{Wait: 5 * time.Second, StepTimeout: 2 * time.Second,
		Retry: saga.RetryPolicy{MaxAttempts: attempts, Initial: 10 * time.Millisecond, Max: 200 * time.Millisecond},
		Saga:  saga.Config{PollInterval: 100 * time.Millisecond, LeaseTTL: 5 * time.Second}}
	return serveUntilStopped(ctx, host.Config{Spec: orchestrator.SpecWith(cfg), DatabaseURL: os.Getenv(crashDBEnv),
		NATSURL: os.Getenv(crashNATSEnv), Addr: os.Getenv(crashAddrEnv), Peers: peers})
}

// runParticipant is a participant's process in the participant crash test.
func runParticipant(spec host.Spec) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var peers map[string]string
	if err := json.Unmarshal([]byte(os.Getenv(crashPeersEnv)), &peers); err != nil {
		return err
	}
	return serveUntilStopped(ctx, host.Config{Spec: spec, DatabaseURL: os.Getenv(crashDBEnv),
		NATSURL: os.Getenv(crashNATSEnv), Addr: os.Getenv(crashAddrEnv), Peers: peers})
}

// serveUntilStopped hosts a service until ctx ends or it fails.
func serveUntilStopped(ctx context.Context, cfg host.Config) error {
	h, err := host.Start(ctx, cfg)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case err := <-h.Done():
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return h.Shutdown(sctx)
}

// jittery puts a reverse proxy with a random latency between min and max
// in front of a participant, so that sagas take long enough to be killed
// (or stalled) mid-step.
func jittery(t *testing.T, target string, min, max time.Duration) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.ErrorLog = log.New(io.Discard, "", 0) // the kills cut requests short by design
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(min + rand.N(max-min))
		proxy.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// startRole starts this test binary as the process of a service (role)
// on addr, and waits until it is ready.
func startRole(t *testing.T, role, dbURL, natsURL, addr string, peers map[string]string, env ...string) *exec.Cmd {
	t.Helper()
	peersJSON, _ := json.Marshal(peers)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), crashRoleEnv+"="+role, crashDBEnv+"="+dbURL, crashNATSEnv+"="+natsURL,
		crashAddrEnv+"="+addr, crashPeersEnv+"="+string(peersJSON)), env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return cmd
			}
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("%s process not ready: %v", role, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// tally fails the test for every saga not ended committed or
// compensated, and counts the sagas by state and those with a step that
// was called more than once (its action or its compensation) for which
// which(step) holds.
func tally(t *testing.T, sagas []saga.Saga, dbURL string, which func(saga.StepRecord) bool) (map[saga.State]int, int) {
	t.Helper()
	counts, repeated := map[saga.State]int{}, 0
	for _, s := range sagas {
		counts[s.State]++
		if s.State != saga.Committed && s.State != saga.Compensated {
			t.Errorf("saga %s ended %s: %s", s.ID, s.State, s.LastError)
		}
		full, err := saga.Get(context.Background(), mustOpen(t, dbURL), s.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range full.Steps {
			if (st.Attempts > 1 || st.CompensationAttempts > 1) && which(st) {
				repeated++
				break
			}
		}
	}
	return counts, repeated
}

// waitFinished waits until the orchestrator at base has no saga running
// or compensating, and returns them all.
func waitFinished(t *testing.T, base string) []saga.Saga {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var list struct{ Sagas []saga.Saga }
		svctest.Do(t, "GET", base+"/ops/sagas?limit=1000", nil).Decode(t, &list)
		var unfinished []string
		for _, s := range list.Sagas {
			if s.State == saga.Running || s.State == saga.Compensating {
				unfinished = append(unfinished, fmt.Sprintf("%s %s: %s", s.ID, s.State, s.LastError))
			}
		}
		if len(unfinished) == 0 {
			return list.Sagas
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d sagas still unfinished: %v", len(unfinished), len(list.Sagas), unfinished)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// seedCustomers registers four customers, and one expert with the skills
// given and room for 100 tickets, and returns the customers' ids.
func seedCustomers(t *testing.T, env *svctest.Env, skills ...string) []string {
	t.Helper()
	var customers []string
	for i := range 4 {
		r := svctest.Do(t, "POST", env.URL("customer")+"/customers", map[string]string{"name": fmt.Sprint("C", i),
			"email": fmt.Sprintf("c%d@example.com", i), "zip": "10001"})
		customers = append(customers, r.JSON(t)["id"].(string))
	}
	svctest.Do(t, "POST", env.URL("assignment")+"/experts", map[string]any{"name": "Big", "email": "big@example.com",
		"skills": skills, "zip": "10002", "capacity": 100})
	return customers
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestCrashOrchestrator(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		fast := 50 * time.Millisecond
		env := svctest.New(t, d, location.Spec(), customer.Spec(), contract.Spec(), billing.Spec(),
			ticket.SpecWith(ticket.Config{ZipRefresh: fast}), assignment.SpecWith(assignment.Config{ZipRefresh: fast}),
			survey.Spec(), completion.Spec())
		customers := seedCustomers(t, env, "printer", "network")
		peers := map[string]string{}
		for _, p := range []string{"ticket", "customer", "assignment", "contract", "billing", "survey", "completion"} {
			peers[p] = jittery(t, env.URL(p), 0, 8*time.Millisecond)
		}
		dbURL := sqldbtest.URL(t, d)
		addr := freeAddr(t)
		base := "http://" + addr

		start := func() *exec.Cmd { return startRole(t, "orchestrator", dbURL, env.NATS.ClientURL(), addr, peers) }

		client := &http.Client{Timeout: 10 * time.Second}
		const rounds, perRound = 12, 8
		for round := range rounds {
			cmd := start()
			time.Sleep(30 * time.Millisecond) // the resumed sagas of the last life finish
			var assigned struct{ Tickets []struct{ ID string } }
			svctest.Do(t, "GET", env.URL("ticket")+"/tickets?status=assigned&limit=3", nil).Decode(t, &assigned)
			var reqs []struct{ path, body string }
			for i := range perRound {
				skill := "printer"
				if i%4 == 3 {
					skill = "mobile" // no expert: compensated
				}
				reqs = append(reqs, struct{ path, body string }{"/sagas/create-ticket",
					fmt.Sprintf(`{"customer_id":%q,"description":"crash %d/%d","priority":"low","skill":%q,"zip":"10001"}`,
						customers[(round+i)%len(customers)], round, i, skill)})
			}
			for i := range 2 {
				reqs = append(reqs, struct{ path, body string }{"/sagas/register-customer",
					fmt.Sprintf(`{"name":"R %d/%d","email":"r%d-%d@example.com","zip":"10001","plan":"standard"}`, round, i, round, i)})
			}
			var cs struct {
				Customers []struct {
					ID          string
					Status      string
					SupportPlan string `json:"support_plan"`
				}
			}
			svctest.Do(t, "GET", env.URL("customer")+"/customers?limit=1000", nil).Decode(t, &cs)
			for _, cu := range cs.Customers {
				if cu.Status == "active" && cu.SupportPlan != "" {
					reqs = append(reqs, struct{ path, body string }{"/sagas/cancel-plan",
						fmt.Sprintf(`{"customer_id":%q,"reason":"crash"}`, cu.ID)})
					break
				}
			}
			for i, tk := range assigned.Tickets {
				if i == 2 {
					reqs = append(reqs, struct{ path, body string }{"/sagas/cancel-ticket", fmt.Sprintf(`{"ticket_id":%q}`, tk.ID)})
					continue
				}
				reqs = append(reqs, struct{ path, body string }{"/sagas/complete-ticket",
					fmt.Sprintf(`{"ticket_id":%q,"notes":"crash done"}`, tk.ID)})
			}
			var wg sync.WaitGroup
			for _, rq := range reqs {
				wg.Go(func() {
					req, _ := http.NewRequest("POST", base+rq.path, strings.NewReader(rq.body))
					req.Header.Set("Content-Type", "application/json")
					if resp, err := client.Do(req); err == nil {
						resp.Body.Close()
					}
				})
			}
			time.Sleep(time.Duration(rand.IntN(60)) * time.Millisecond)
			_ = cmd.Process.Kill() // SIGKILL, mid-flight
			_ = cmd.Wait()
			wg.Wait()
		}

		// The last life: it finishes whatever the others left.
		cmd := start()
		defer func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
		}()
		sagas := waitFinished(t, base)
		counts, resumed := tally(t, sagas, dbURL, func(saga.StepRecord) bool { return true })
		if len(sagas) == 0 {
			t.Fatal("no saga was begun before the kills")
		}
		t.Logf("%d sagas: %d committed, %d compensated; %d called a step again after a crash or failure",
			len(sagas), counts[saga.Committed], counts[saga.Compensated], resumed)
		checkInvariants(t, env)

		// Registrations: profile, plan and billing account agree; completed
		// tickets have their survey and completion record.
		var registered []string
		perDef := map[string]int{}
		for _, s := range sagas {
			perDef[s.Definition]++
			full, err := saga.Get(context.Background(), mustOpen(t, dbURL), s.ID)
			if err != nil {
				t.Fatal(err)
			}
			switch s.Definition {
			case orchestrator.RegisterCustomer:
				var in orchestrator.Registration
				if err := json.Unmarshal(full.Input, &in); err != nil {
					t.Fatal(err)
				}
				registered = append(registered, in.CustomerID)
			case orchestrator.CancelPlan:
				var in orchestrator.Cancellation
				if err := json.Unmarshal(full.Input, &in); err != nil {
					t.Fatal(err)
				}
				registered = append(registered, in.CustomerID)
			case orchestrator.CompleteTicket:
				var in orchestrator.Completion
				if err := json.Unmarshal(full.Input, &in); err != nil {
					t.Fatal(err)
				}
				if s.State == saga.Committed {
					if r := svctest.Do(t, "GET", env.URL("completion")+"/completions/"+in.TicketID, nil); r.Status != 200 {
						t.Errorf("completed ticket %s has no completion record: %d", in.TicketID, r.Status)
					}
					var sv struct{ Surveys []any }
					svctest.Do(t, "GET", env.URL("survey")+"/surveys?ticket_id="+in.TicketID, nil).Decode(t, &sv)
					if len(sv.Surveys) != 1 {
						t.Errorf("completed ticket %s has %d surveys", in.TicketID, len(sv.Surveys))
					}
				}
			}
		}
		t.Logf("sagas per workflow: %v", perDef)
		problems, err := invariant.CheckRegistrations(context.Background(), env.Peers(), registered)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("invariant: %s", p)
		}
	})
}

var openDBs sync.Map

func mustOpen(t *testing.T, url string) *sqldb.DB {
	t.Helper()
	if db, ok := openDBs.Load(url); ok {
		return db.(*sqldb.DB)
	}
	db, err := sqldb.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	openDBs.Store(url, db)
	t.Cleanup(func() { openDBs.Delete(url); db.Close() })
	return db
}
