package main

// The whole system is killed with SIGKILL — every service, their SQLite
// databases, the relays and the embedded JetStream in one process — while
// clients run every workflow through the gateway, and restarted, several
// times. Clients retry what got no answer with the same Idempotency-Key,
// as a client should. At the end every answer a client got still holds,
// the sagas have all ended, every outbox is drained, the audit trail holds
// each record once and the cross-service invariants hold.

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/sysops-squad/sysops/internal/faultnet"
	"github.com/sysops-squad/sysops/internal/invariant"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

// crashClient is one customer's run of the workflows, resumable: each step
// is kept until it has a definite answer.
type crashClient struct {
	n        int
	done     bool
	customer string
	tickets  []string // created, in order
	// outcomes by step key: "ok" (applied) or "refused" (a 4xx answer,
	// nothing applied)
	outcomes map[string]string
}

// gatewayCall is one POST through the gateway with an Idempotency-Key.
type gatewayCall struct {
	api        string
	http       *http.Client
	polls      atomic.Int64
	conflicts  atomic.Int64
	unanswered atomic.Int64 // no response: the system was down or killed mid-request
	failed     atomic.Int64 // a 5xx answer: a service could not do it now
	internal   atomic.Int64 // of which 500s: a service did not know why
	inflight   atomic.Int64
}

// post returns the final answer to a POST: 2xx with its body, or a 4xx
// refusal. A saga still running (202) is polled until it ends. ok is
// false when there was no definite answer yet (the system is down, a 5xx,
// or the key is still in progress), so the caller must try again later
// with the same key.
func (g *gatewayCall) post(ctx context.Context, path, key string, body any) (status int, out map[string]any, ok bool) {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, "POST", g.api+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	g.inflight.Add(1)
	defer g.inflight.Add(-1)
	resp, err := g.http.Do(req)
	if err != nil {
		g.unanswered.Add(1)
		return 0, nil, false
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &out)
	switch {
	case resp.StatusCode == http.StatusAccepted:
		id, _ := out["saga_id"].(string)
		for ctx.Err() == nil {
			g.polls.Add(1)
			st, sg := g.get(ctx, "/api/sagas/"+id)
			if st == 0 {
				return 0, nil, false
			}
			switch sg["state"] {
			case "committed":
				// The key keeps answering 202: the outcome is the saga's,
				// its steps' outputs in the shape of the 201's body.
				return http.StatusCreated, sagaAnswer(sg), true
			case "compensated":
				return http.StatusConflict, sg, true
			}
			time.Sleep(50 * time.Millisecond)
		}
		return 0, nil, false
	case resp.StatusCode == http.StatusConflict && resp.Header.Get("Retry-After") != "":
		// The first request with this key still runs, or was cut off by a
		// kill and holds the key until its reservation expires: wait a
		// little, as Retry-After asks (a whole second would slow the test).
		g.conflicts.Add(1)
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
		return 0, nil, false
	case resp.StatusCode >= 500:
		g.failed.Add(1)
		if resp.StatusCode == http.StatusInternalServerError {
			g.internal.Add(1)
		}
		return 0, nil, false
	}
	return resp.StatusCode, out, true
}

// sagaAnswer is a committed saga's answer as the gateway's 201 shapes it:
// the customer a registration made, the ticket a creation made.
func sagaAnswer(sg map[string]any) map[string]any {
	out := map[string]any{}
	steps, _ := sg["steps"].([]any)
	for _, st := range steps {
		st, _ := st.(map[string]any)
		switch st["name"] {
		case "profile":
			out["customer"] = st["output"]
		case "mark-assigned":
			out["ticket"] = st["output"]
		}
	}
	return out
}

func (g *gatewayCall) get(ctx context.Context, path string) (int, map[string]any) {
	req, _ := http.NewRequestWithContext(ctx, "GET", g.api+path, nil)
	resp, err := g.http.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// step runs one step of c's script unless it has an answer already; it
// returns false when the step got no definite answer.
func (c *crashClient) step(ctx context.Context, g *gatewayCall, name, path string, body any, use func(map[string]any)) bool {
	if _, done := c.outcomes[name]; done {
		return true
	}
	outcome, out, ok := c.send(ctx, g, name, path, body)
	if !ok {
		return false
	}
	c.outcomes[name] = outcome
	if outcome == "ok" && use != nil {
		use(out)
	}
	return true
}

// send makes one POST of step name with the step's key and returns its
// outcome; ok is false when it got no definite answer.
func (c *crashClient) send(ctx context.Context, g *gatewayCall, name, path string, body any) (outcome string, out map[string]any, ok bool) {
	key := fmt.Sprintf("crash-%d-%s", c.n, name)
	status, out, ok := g.post(ctx, path, key, body)
	switch {
	case !ok:
		return "", nil, false
	case status >= 300:
		return "refused", out, true
	}
	return "ok", out, true
}

// race sends the same request twice at once, as two requests (each with
// its own key and body): name and name+"-2". Of the two, one makes the
// change and the other is refused; checkAfterCrashes checks that. It
// returns false while either has no definite answer.
func (c *crashClient) race(ctx context.Context, g *gatewayCall, name, path string, body, body2 any) bool {
	names, bodies := [2]string{name, name + "-2"}, [2]any{body, body2}
	var got [2]string
	var wg sync.WaitGroup
	for i := range 2 {
		if o, done := c.outcomes[names[i]]; done {
			got[i] = o
			continue
		}
		wg.Go(func() { got[i], _, _ = c.send(ctx, g, names[i], path, bodies[i]) })
	}
	wg.Wait()
	for i, o := range got {
		if o != "" {
			c.outcomes[names[i]] = o
		}
	}
	return got[0] != "" && got[1] != ""
}

// won reports whether either request of the race name made the change.
func (c *crashClient) won(name string) bool {
	return c.outcomes[name] == "ok" || c.outcomes[name+"-2"] == "ok"
}

// run carries c's script as far as it gets: register; open three tickets;
// complete the first (two requests racing), cancel the second; every other
// customer then cancels the plan (two requests racing). It returns true
// once every step has its answer.
func (c *crashClient) run(ctx context.Context, g *gatewayCall) bool {
	if !c.step(ctx, g, "register", "/api/customers", map[string]string{"name": fmt.Sprint("Crash ", c.n),
		"email": fmt.Sprintf("crash%d@example.com", c.n), "zip": "10001", "plan": "premium"}, func(out map[string]any) {
		cu, _ := out["customer"].(map[string]any)
		c.customer, _ = cu["id"].(string)
	}) {
		return false
	}
	if c.outcomes["register"] != "ok" {
		return true
	}
	for i := range 3 {
		name := fmt.Sprint("ticket-", i)
		if !c.step(ctx, g, name, "/api/tickets", map[string]string{"customer_id": c.customer, "description": name,
			"priority": "high", "skill": "printer", "zip": "10001"}, func(out map[string]any) {
			tk, _ := out["ticket"].(map[string]any)
			id, _ := tk["id"].(string)
			c.tickets = append(c.tickets, id)
		}) {
			return false
		}
	}
	// Two requests race to complete the first ticket, two to cancel the
	// plan.
	if len(c.tickets) > 0 && !c.race(ctx, g, "complete", "/api/tickets/"+c.tickets[0]+"/complete",
		map[string]string{"notes": "fixed"}, map[string]string{"notes": "fixed too"}) {
		return false
	}
	if len(c.tickets) > 1 && !c.step(ctx, g, "cancel", "/api/tickets/"+c.tickets[1]+"/cancel", map[string]string{}, nil) {
		return false
	}
	if c.n%2 == 0 && !c.race(ctx, g, "cancel-plan", "/api/customers/"+c.customer+"/cancel-plan",
		map[string]string{"reason": "crash test"}, map[string]string{"reason": "crash test too"}) {
		return false
	}
	return true
}

func TestSystemSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts the whole system several times")
	}
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		args := []string{"up", "--data-dir", filepath.Join(t.TempDir(), "data"), "--addr", "127.0.0.1:0"}
		if d == sqldb.Postgres {
			// Small pools: other packages' tests share the server.
			args = append(args, append(onPostgres(t, "crash"), "--db-conns", "3")...)
		}
		killUnderClients(t, args)
	})
	// The baseline too: with no saga, each client's retry with its key
	// finishes the workflow its killed request began (SQLite only, to
	// keep the run short).
	t.Run("sequential", func(t *testing.T) {
		killUnderClients(t, []string{"up", "--data-dir", filepath.Join(t.TempDir(), "data"), "--addr", "127.0.0.1:0",
			"--consistency", "sequential"})
	})
}

// killUnderClients runs sysops with args, kills it under clients and
// restarts it, then checks the outcome (see the file's comment).
func killUnderClients(t *testing.T, args []string) {
	// Each run brings new clients, so that every kill finds work in
	// flight; those it interrupts carry on in the next run.
	const perRun, kills = 8, 5
	var cs []*crashClient
	g := &gatewayCall{http: &http.Client{Timeout: 15 * time.Second}}
	var services map[string]string
	for round := 0; round <= kills; round++ {
		p := start(t, args...)
		services = p.table(t)
		g.api = services["gateway"]
		if round == 0 {
			addExperts(t, g)
		}
		for range perRun {
			cs = append(cs, &crashClient{n: len(cs), outcomes: map[string]string{}})
		}
		if round == kills {
			// The last run is not killed: every client finishes.
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			var wg sync.WaitGroup
			for _, c := range cs {
				wg.Go(func() {
					for ctx.Err() == nil && !c.done {
						c.done = c.run(ctx, g)
						if !c.done {
							time.Sleep(100 * time.Millisecond)
						}
					}
				})
			}
			wg.Wait()
			cancel()
			checkAfterCrashes(t, g, services, cs)
			if err := p.stop(t, syscall.SIGTERM); err != nil {
				t.Errorf("up exited with %v after SIGTERM; stderr:\n%s", err, p.stderr)
			}
			return
		}
		// Clients run while the system lives; it is killed at a random
		// moment, mid-request for most of them.
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		for _, c := range cs {
			wg.Go(func() {
				for ctx.Err() == nil && !c.run(ctx, g) {
					time.Sleep(20 * time.Millisecond)
				}
			})
		}
		time.Sleep(time.Duration(10+rand.IntN(150)) * time.Millisecond)
		for wait := time.Now().Add(2 * time.Second); g.inflight.Load() == 0 && time.Now().Before(wait); {
			time.Sleep(time.Millisecond)
		}
		if err := p.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = p.cmd.Wait()
		cancel()
		wg.Wait()
	}
}

// addExperts adds the experts the clients' tickets are assigned to.
func addExperts(t *testing.T, g *gatewayCall) {
	t.Helper()
	for i, zip := range []string{"07030", "10001", "11201"} {
		st, out, ok := g.post(t.Context(), "/api/experts", fmt.Sprint("crash-expert-", i), map[string]any{
			"name": fmt.Sprint("Expert ", i), "email": fmt.Sprintf("expert%d@sysops.example", i),
			"skills": []string{"printer"}, "zip": zip, "capacity": 100})
		if !ok || st != http.StatusCreated {
			t.Fatalf("add expert: %d %v", st, out)
		}
	}
}

// TestSystemRidesOutADatabaseOutage: PostgreSQL goes away three times
// (every connection of every service reset, new ones refused, for 1.5 s:
// the server restarting, as seen from the services), behind a proxy,
// while clients run every workflow through the gateway and retry what
// got no answer with its key; orchestrated, and the sequential baseline. Once it is back for good every client
// finishes, and the same checks as after kill -9 hold: what clients were
// told, every saga ended, every outbox drained, the audit trail once per
// record, the invariants across owners.
func TestSystemRidesOutADatabaseOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole system on PostgreSQL and cuts it off")
	}
	for _, mode := range []string{"orchestrated", "sequential"} {
		t.Run(mode, func(t *testing.T) {
			u, err := url.Parse(sqldbtest.PostgresURL(t))
			if err != nil {
				t.Fatal(err)
			}
			proxy := faultnet.Start(t, u.Host)
			args := onPostgres(t, "outage")
			u.Host = proxy.Addr()
			args[1] = u.String() // --postgres, through the proxy
			outageUnderClients(t, mode, args, proxy.Cut, func() {
				if err := proxy.Restore(); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

// TestSystemRidesOutAFailover: the same with the server answering but
// refusing every write, three times, as a primary demoted in a failover
// does until its clients reach the new one: every service's sessions
// are ended and its new ones are read-only (the services' roles get
// default_transaction_read_only), then writable again.
func TestSystemRidesOutAFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole system on PostgreSQL and makes it read-only")
	}
	for _, mode := range []string{"orchestrated", "sequential"} {
		t.Run(mode, func(t *testing.T) {
			args := onPostgres(t, "failover")
			prefix := args[3]
			admin, err := sql.Open("pgx", sqldbtest.PostgresURL(t))
			if err != nil {
				t.Fatal(err)
			}
			defer admin.Close()
			readOnly := func(on bool) {
				set := "RESET default_transaction_read_only"
				if on {
					set = "SET default_transaction_read_only = on"
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				rows, err := admin.QueryContext(ctx, `SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)`, prefix)
				if err != nil {
					t.Fatal(err)
				}
				var roles []string
				for rows.Next() {
					var r string
					if err := rows.Scan(&r); err != nil {
						t.Fatal(err)
					}
					roles = append(roles, r)
				}
				rows.Close()
				for _, r := range roles {
					if _, err := admin.ExecContext(ctx, "ALTER ROLE "+pgx.Identifier{r}.Sanitize()+" "+set); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := admin.ExecContext(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
					WHERE starts_with(usename, $1)`, prefix); err != nil {
					t.Fatal(err)
				}
			}
			outageUnderClients(t, mode, args, func() { readOnly(true) }, func() { readOnly(false) })
		})
	}
}

// outageUnderClients runs sysops up with the consistency mode and the
// PostgreSQL args, takes the database away (begin) for 1.5 s and brings it
// back (end) three times under clients, then checks the outcome as after
// kill -9.
func outageUnderClients(t *testing.T, mode string, args []string, begin, end func()) {
	p := start(t, append([]string{"up", "--data-dir", t.TempDir(), "--addr", "127.0.0.1:0", "--db-conns", "3",
		"--consistency", mode}, args...)...)
	services := p.table(t)
	g := &gatewayCall{api: services["gateway"], http: &http.Client{Timeout: 15 * time.Second}}
	addExperts(t, g)

	var cs []*crashClient
	for n := range 16 {
		cs = append(cs, &crashClient{n: n, outcomes: map[string]string{}})
	}
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() {
			for ctx.Err() == nil && !c.done {
				if c.done = c.run(ctx, g); !c.done {
					time.Sleep(100 * time.Millisecond)
				}
			}
		})
	}
	for range 3 {
		time.Sleep(time.Duration(100+rand.IntN(300)) * time.Millisecond)
		begin()
		time.Sleep(1500 * time.Millisecond)
		end()
	}
	wg.Wait()
	checkAfterCrashes(t, g, services, cs)
	// A database that is away, or refuses writes, is no service's
	// internal error: every failure it causes answers 503, which callers
	// retry.
	if n := g.internal.Load(); n > 0 {
		var lines []string
		for l := range strings.Lines(p.stderr.String()) {
			if strings.Contains(l, `level=ERROR msg="request failed"`) {
				lines = append(lines, l)
			}
		}
		t.Errorf("%d requests answered 500 during the outages; the services logged:\n%s", n, strings.Join(lines, ""))
	}
	if err := p.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("up exited with %v after SIGTERM; stderr:\n%s", err, p.stderr)
	}
}

// checkAfterCrashes waits for the system to settle, then checks that what
// the clients were told still holds and that the owners agree.
func checkAfterCrashes(t *testing.T, g *gatewayCall, services map[string]string, cs []*crashClient) {
	t.Helper()
	ctx := t.Context()
	for _, c := range cs {
		if !c.done {
			t.Errorf("client %d did not finish after the last restart: %v", c.n, c.outcomes)
		}
	}
	// Every saga ends, and every outbox drains.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var unsettled []string
		for _, state := range []string{"running", "compensating", "needs_attention"} {
			_, out := g.get(ctx, "/api/ops/sagas?state="+state)
			if sagas, _ := out["sagas"].([]any); len(sagas) > 0 {
				unsettled = append(unsettled, fmt.Sprintf("%d sagas %s", len(sagas), state))
			}
		}
		for _, s := range registry() {
			if s.Name == "gateway" {
				continue
			}
			st, out := g.get(ctx, "/api/ops/outbox/"+s.Name+"/stats")
			if st == http.StatusOK && (out["pending"] != 0.0 || out["dead"] != 0.0) {
				unsettled = append(unsettled, fmt.Sprintf("outbox of %s: %v pending, %v dead", s.Name, out["pending"], out["dead"]))
			}
		}
		if len(unsettled) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not settled 30 s after the last restart: %s", strings.Join(unsettled, "; "))
		}
		time.Sleep(200 * time.Millisecond)
	}

	// What clients were told holds.
	var registered []string
	applied, refused := 0, 0
	for _, c := range cs {
		if c.outcomes["register"] != "ok" {
			continue
		}
		registered = append(registered, c.customer)
		st, cu := g.get(ctx, "/api/customers/"+c.customer)
		if st != http.StatusOK {
			t.Errorf("client %d: customer %s = %d %v", c.n, c.customer, st, cu)
			continue
		}
		wantOpen := 0
		for i, id := range c.tickets {
			_, tv := g.get(ctx, "/api/tickets/"+id)
			tk, _ := tv["ticket"].(map[string]any)
			want := "assigned"
			switch {
			case i == 0 && c.won("complete"):
				want = "completed"
			case i == 1 && c.outcomes["cancel"] == "ok":
				want = "cancelled"
			}
			if tk["status"] != want {
				t.Errorf("client %d: ticket %s is %v, want %s (outcomes %v)", c.n, id, tk["status"], want, c.outcomes)
			}
			if want == "assigned" {
				wantOpen++
			}
		}
		for race, ran := range map[string]bool{"complete": len(c.tickets) > 0, "cancel-plan": c.n%2 == 0} {
			switch {
			case c.outcomes[race] == "ok" && c.outcomes[race+"-2"] == "ok":
				t.Errorf("client %d: both requests of the race %s made the change (outcomes %v)", c.n, race, c.outcomes)
			case ran && !c.won(race):
				t.Errorf("client %d: neither request of the race %s made the change (outcomes %v)", c.n, race, c.outcomes)
			}
		}
		if cu["open_tickets"] != float64(wantOpen) {
			t.Errorf("client %d: customer counts %v open tickets, want %d", c.n, cu["open_tickets"], wantOpen)
		}
		for _, o := range c.outcomes {
			switch o {
			case "ok":
				applied++
			case "refused":
				refused++
			}
		}
	}
	// The audit trail, fed through a work queue and an inbox, holds each
	// record once: redelivered after the kills, applied once. A record the
	// killed process had received and not acknowledged comes back once its
	// AckWait (10 s) has passed, holding back the entity's later records
	// until then: the wait allows for that.
	auditFrom := time.Now()
	auditBy := auditFrom.Add(30 * time.Second)
	var auditWait time.Duration // until the last record arrived
	for _, c := range cs {
		if c.outcomes["register"] != "ok" {
			continue
		}
		want := map[string][2]string{"customer/" + c.customer: {"customer", "customer.registered"}}
		for i, id := range c.tickets {
			want["ticket/"+id] = [2]string{"ticket", "ticket.opened"}
			if i == 0 && c.won("complete") {
				want["ticket/"+id+"#done"] = [2]string{"ticket", "ticket.completed"}
			}
		}
		for entity, a := range want {
			kind, id, _ := strings.Cut(strings.TrimSuffix(entity, "#done"), "/")
			n := 0
			for ; ; time.Sleep(100 * time.Millisecond) {
				_, out := g.get(ctx, "/api/audit?entity_type="+kind+"&entity_id="+id)
				records, _ := out["records"].([]any)
				n = 0
				for _, r := range records {
					if r, _ := r.(map[string]any); r["service"] == a[0] && r["action"] == a[1] {
						n++
					}
				}
				if n > 0 || time.Now().After(auditBy) {
					break
				}
			}
			auditWait = time.Since(auditFrom)
			if n != 1 {
				t.Errorf("client %d: %d audit records %s by %s of %s %s, want 1", c.n, n, a[1], a[0], kind, id)
			}
		}
	}

	if applied == 0 || g.unanswered.Load()+g.failed.Load() == 0 {
		t.Fatalf("%d workflows applied, no request cut off or failed by the fault: the test proved nothing", applied)
	}
	problems, err := invariant.Check(ctx, services)
	if err != nil {
		t.Fatal(err)
	}
	more, err := invariant.CheckRegistrations(ctx, services, registered)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range append(problems, more...) {
		t.Error(p)
	}
	t.Logf("%d clients, %d workflows applied, %d refused; %d requests unanswered (killed), %d answered 5xx (%d of them 500), %d answered 409 in progress, %d saga polls; audit trail complete %.1f s after the checks began",
		len(cs), applied, refused, g.unanswered.Load(), g.failed.Load(), g.internal.Load(), g.conflicts.Load(), g.polls.Load(), auditWait.Seconds())
}
