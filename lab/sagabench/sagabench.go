// Package sagabench measures the create-ticket saga with its real
// participants: ticket, customer and assignment (and location, for their
// zip copies), each its own service with its own database, called over
// loopback HTTP, and the orchestrator logging every step in its own
// database. It measures completed sagas per second and their latency at
// several concurrencies, for sagas that commit and for sagas whose
// assignment is refused, so that the steps before it are compensated;
// and, with Config.Outage, how sagas end when the assignment participant
// goes away for a while under load.
package sagabench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sysops-squad/sysops/internal/faultnet"
	"github.com/sysops-squad/sysops/internal/host"
	"github.com/sysops-squad/sysops/internal/svc"
	"github.com/sysops-squad/sysops/lab/cpu"
	"github.com/sysops-squad/sysops/outbox"
	"github.com/sysops-squad/sysops/saga"
	"github.com/sysops-squad/sysops/services/assignment"
	"github.com/sysops-squad/sysops/services/customer"
	"github.com/sysops-squad/sysops/services/location"
	"github.com/sysops-squad/sysops/services/orchestrator"
	"github.com/sysops-squad/sysops/services/ticket"
	"github.com/sysops-squad/sysops/sqldb"
)

// Services lists the databases the bench needs, by service name.
var Services = []string{location.Name, customer.Name, ticket.Name, assignment.Name, orchestrator.Name}

// Config configures a run.
type Config struct {
	// URLs maps each of [Services] to an empty database of its own.
	URLs map[string]string
	// NATSURL is the broker the services' relays publish to.
	NATSURL string
	// Concurrency lists the numbers of sagas kept in flight. Default 1,
	// 16, 64.
	Concurrency []int
	// Duration is how long each level runs. Default 5 seconds.
	Duration time.Duration
	// Outage, if positive, adds a scenario: the assignment participant
	// away (every connection to it cut, through a proxy) for this long
	// while sagas run at the largest concurrency.
	Outage time.Duration
	Logger *slog.Logger
}

// OutageResult is the participant-outage scenario: sagas begun in the
// second before the assignment participant went away, while it was away,
// and in the two seconds after, and how each ended.
type OutageResult struct {
	Participant string
	Outage      time.Duration
	Concurrency int
	Sagas       int
	Committed   int
	Compensated int
	// NeedsAttention counts sagas a person must look at; Other those that
	// ended otherwise (cancelled, resolved: none in this scenario).
	NeedsAttention, Other int
	// Longest is the longest a saga took; Settled how long after the
	// participant came back the last saga begun before then ended.
	Longest, Settled time.Duration
	// Away counts the orchestrator's calls to the participant while it
	// was away: made (and failed), and refused by its circuit breaker
	// without being made. Without the breaker every refused one would
	// have been made: a retry storm.
	Away saga.ParticipantStats
}

// Result is one level of one scenario.
type Result struct {
	Scenario    string
	Concurrency int
	Sagas       int
	PerSecond   float64
	P50, P99    time.Duration
	Unexpected  int // sagas that ended otherwise than the scenario expects
	// CPU is the whole machine's CPU time (services, database server,
	// broker) per saga, and Busy its share of the cores, while the level
	// ran; Busy is 0 where the machine cannot be read.
	CPU  time.Duration
	Busy float64
}

// Report is a run's setup and figures.
type Report struct {
	Setup      string
	Results    []Result
	LogWrites  int64
	LogCommits int64
	// Calls of batched steps, and the participant calls that carried them.
	BatchedCalls int64
	Batches      int64
	Outage       *OutageResult
}

// Print writes the report.
func (r Report) Print(w io.Writer) {
	fmt.Fprintln(w, r.Setup)
	for _, res := range r.Results {
		fmt.Fprintf(w, "  %-38s c=%-3d %8.0f sagas/s  p50 %7.2fms  p99 %7.2fms  (%d sagas", res.Scenario, res.Concurrency,
			res.PerSecond, ms(res.P50), ms(res.P99), res.Sagas)
		if res.Unexpected > 0 {
			fmt.Fprintf(w, ", %d unexpected", res.Unexpected)
		}
		fmt.Fprint(w, ")")
		if res.Busy > 0 {
			fmt.Fprintf(w, "  cpu %.2fms/saga, machine %.0f%% busy", ms(res.CPU), 100*res.Busy)
		}
		fmt.Fprintln(w)
	}
	if r.LogWrites > 0 {
		fmt.Fprintf(w, "  saga log: %d writes in %d commits (%.1f writes per commit)\n", r.LogWrites, r.LogCommits,
			float64(r.LogWrites)/float64(max(1, r.LogCommits)))
	}
	if r.Batches > 0 {
		fmt.Fprintf(w, "  batched steps: %d calls in %d participant calls (%.1f per call)\n", r.BatchedCalls, r.Batches,
			float64(r.BatchedCalls)/float64(r.Batches))
	}
	if o := r.Outage; o != nil {
		fmt.Fprintf(w, "  %s away for %v, c=%d: %d sagas, %d committed, %d compensated, %d need attention, %d other;\n"+
			"    longest %v; those begun before it came back all ended %v after\n", o.Participant, o.Outage, o.Concurrency, o.Sagas, o.Committed,
			o.Compensated, o.NeedsAttention, o.Other, o.Longest.Round(10*time.Millisecond), o.Settled.Round(10*time.Millisecond))
		fmt.Fprintf(w, "    calls to %s while away: %d made (%d failed), %d refused by its circuit breaker without a call\n",
			o.Participant, o.Away.Made, o.Away.Failed, o.Away.Refused)
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Run starts the participants and the orchestrator, seeds customers and
// experts, and measures.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if len(cfg.Concurrency) == 0 {
		cfg.Concurrency = []int{1, 16, 64}
	}
	if cfg.Duration <= 0 {
		cfg.Duration = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	for _, s := range Services {
		if cfg.URLs[s] == "" {
			return Report{}, fmt.Errorf("sagabench: no database for %s", s)
		}
	}
	var rep Report
	specs := []host.Spec{location.Spec(), customer.Spec(), ticket.Spec(), assignment.Spec()}
	peers := map[string]string{}
	lns := map[string]net.Listener{}
	for _, s := range specs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return rep, err
		}
		lns[s.Name], peers[s.Name] = ln, "http://"+ln.Addr().String()
	}
	var hosts []*host.Host
	defer func() {
		for _, h := range hosts {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = h.Shutdown(sctx)
			cancel()
		}
	}()
	for _, s := range specs {
		h, err := host.Start(ctx, host.Config{Spec: s, DatabaseURL: cfg.URLs[s.Name], NATSURL: cfg.NATSURL, Listener: lns[s.Name],
			Peers: peers, Logger: cfg.Logger})
		if err != nil {
			return rep, err
		}
		hosts = append(hosts, h)
	}

	odb, err := sqldb.Open(ctx, cfg.URLs[orchestrator.Name])
	if err != nil {
		return rep, err
	}
	defer odb.Close()
	if _, err := sqldb.Migrate(ctx, odb, orchestrator.Name, saga.Migrations()); err != nil {
		return rep, err
	}
	o, err := startOrchestrator(ctx, odb, peers, cfg.Logger)
	if err != nil {
		return rep, err
	}
	defer o.Stop()

	customers, err := seed(ctx, peers)
	if err != nil {
		return rep, err
	}
	rep.Setup = describe(ctx, odb, cfg)
	for _, sc := range []struct {
		name, skill string
		want        saga.State
	}{
		{"create-ticket, committed", "printer", saga.Committed},
		{"create-ticket, assignment refused", "mobile", saga.Compensated},
	} {
		for _, c := range cfg.Concurrency {
			res, err := level(ctx, o, customers, sc.skill, sc.want, c, cfg.Duration)
			if err != nil {
				return rep, err
			}
			res.Scenario = sc.name
			rep.Results = append(rep.Results, res)
		}
	}
	st := o.Stats()
	rep.LogWrites, rep.LogCommits = st.LogWrites, st.LogCommits
	rep.BatchedCalls, rep.Batches = st.BatchedCalls, st.Batches
	if cfg.Outage > 0 {
		// Another orchestrator on the same log, reaching the assignment
		// participant through a proxy; the first stops, so that the
		// throughput levels above ran with no proxy in the way.
		o.Stop()
		res, err := participantOutage(ctx, odb, peers, customers, cfg)
		if err != nil {
			return rep, err
		}
		rep.Outage = &res
	}
	return rep, nil
}

// startOrchestrator starts the orchestrator service's sagas on the log in
// odb, calling the participants at peers.
func startOrchestrator(ctx context.Context, odb *sqldb.DB, peers map[string]string, logger *slog.Logger) (*saga.Orchestrator, error) {
	svcOrch, err := orchestrator.New(odb, svc.NewPeers(peers), orchestrator.Config{Saga: saga.Config{ParticipantConcurrency: 128}}, logger)
	if err != nil {
		return nil, err
	}
	o := svcOrch.Orchestrator()
	return o, o.Start(ctx)
}

// participantOutage runs the outage scenario (see [Config.Outage]).
func participantOutage(ctx context.Context, odb *sqldb.DB, peers map[string]string, customers []string, cfg Config) (OutageResult, error) {
	c := cfg.Concurrency[len(cfg.Concurrency)-1]
	res := OutageResult{Participant: assignment.Name, Outage: cfg.Outage, Concurrency: c}
	proxy, err := faultnet.Listen(strings.TrimPrefix(peers[assignment.Name], "http://"))
	if err != nil {
		return res, err
	}
	defer proxy.Close()
	through := maps.Clone(peers)
	through[assignment.Name] = "http://" + proxy.Addr()
	o, err := startOrchestrator(ctx, odb, through, cfg.Logger)
	if err != nil {
		return res, err
	}
	defer o.Stop()

	var mu sync.Mutex
	var spans [][2]time.Time // each saga's begin and end
	var firstErr atomic.Pointer[error]
	issuing, stopIssuing := context.WithCancel(ctx)
	defer stopIssuing()
	var wg sync.WaitGroup
	for w := range c {
		wg.Go(func() {
			for i := 0; issuing.Err() == nil; i++ {
				in := orchestrator.TicketRequest{TicketID: "outage-" + outbox.NewID(), CustomerID: customers[(i*c+w)%len(customers)],
					Description: "bench", Priority: "medium", Skill: "printer", Zip: "10001"}
				t0 := time.Now()
				s, err := o.Run(ctx, orchestrator.CreateTicket, "", in)
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				mu.Lock()
				res.Sagas++
				switch s.State {
				case saga.Committed:
					res.Committed++
				case saga.Compensated:
					res.Compensated++
				case saga.NeedsAttention:
					res.NeedsAttention++
				default:
					res.Other++
				}
				res.Longest = max(res.Longest, time.Since(t0))
				spans = append(spans, [2]time.Time{t0, time.Now()})
				mu.Unlock()
			}
		})
	}
	sleep := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	var backAt time.Time
	if sleep(time.Second) {
		proxy.Cut()
		cut := o.Stats().Participants[assignment.Name]
		if sleep(cfg.Outage) {
			back := o.Stats().Participants[assignment.Name]
			if err := proxy.Restore(); err != nil {
				stopIssuing()
				wg.Wait()
				return res, err
			}
			backAt = time.Now()
			res.Away = saga.ParticipantStats{Made: back.Made - cut.Made, Failed: back.Failed - cut.Failed, Refused: back.Refused - cut.Refused}
			sleep(2 * time.Second)
		}
	}
	stopIssuing()
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return res, *p
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	for _, sp := range spans {
		if sp[0].Before(backAt) {
			res.Settled = max(res.Settled, sp[1].Sub(backAt))
		}
	}
	return res, nil
}

func describe(ctx context.Context, db *sqldb.DB, cfg Config) string {
	durability := "SQLite, synchronous=FULL (fsync on every commit)"
	if db.Dialect() == sqldb.Postgres {
		var fsync, commit string
		_ = db.QueryRowContext(ctx, `SHOW fsync`).Scan(&fsync)
		_ = db.QueryRowContext(ctx, `SHOW synchronous_commit`).Scan(&commit)
		durability = fmt.Sprintf("PostgreSQL, fsync=%s synchronous_commit=%s", fsync, commit)
	}
	levels := make([]string, len(cfg.Concurrency))
	for i, c := range cfg.Concurrency {
		levels[i] = fmt.Sprint(c)
	}
	return fmt.Sprintf("saga bench: %s; ticket, customer, assignment (and location) each with its own database, called over "+
		"loopback HTTP with Idempotency-Keys; orchestrator log in its own database; 4 steps per saga "+
		"(open ticket, count it, assign, mark assigned); concurrency %s, %v per level", durability, strings.Join(levels, ", "), cfg.Duration)
}

// seed registers customers and enough experts (printer only: no expert
// has mobile) for every committed saga of the run.
func seed(ctx context.Context, peers map[string]string) ([]string, error) {
	cust, asg := svc.NewClient(svc.NewPeers(peers), customer.Name), svc.NewClient(svc.NewPeers(peers), assignment.Name)
	run := outbox.NewID()[:8]
	var customers []string
	for i := range 64 {
		var c struct {
			ID string `json:"id"`
		}
		if err := cust.Post(ctx, "/customers", map[string]string{"name": fmt.Sprint("Bench ", i),
			"email": fmt.Sprintf("bench-%s-%d@example.com", run, i), "zip": "10001"}, &c); err != nil {
			return nil, fmt.Errorf("sagabench: seed customers: %w", err)
		}
		customers = append(customers, c.ID)
	}
	zips := []string{"10001", "10002", "10003", "11201", "07030"}
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	for i := range 1000 {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			err := asg.Post(ctx, "/experts", map[string]any{"name": fmt.Sprint("Expert ", i), "email": fmt.Sprintf("x-%s-%d@example.com", run, i),
				"skills": []string{"printer"}, "zip": zips[i%len(zips)], "capacity": 100}, nil)
			if err != nil {
				failed.Store(&err)
			}
		})
	}
	wg.Wait()
	if p := failed.Load(); p != nil {
		return nil, fmt.Errorf("sagabench: seed experts: %w", *p)
	}
	return customers, nil
}

func level(ctx context.Context, o *saga.Orchestrator, customers []string, skill string, want saga.State, c int, d time.Duration) (Result, error) {
	res := Result{Concurrency: c}
	var mu sync.Mutex
	var lat []time.Duration
	var unexpected atomic.Int64
	var firstErr atomic.Pointer[error]
	deadline := time.Now().Add(d)
	start, used := time.Now(), cpu.Read()
	var wg sync.WaitGroup
	var n atomic.Int64
	for w := range c {
		wg.Go(func() {
			for time.Now().Before(deadline) && ctx.Err() == nil {
				i := n.Add(1)
				in := orchestrator.TicketRequest{TicketID: "bench-" + outbox.NewID(), CustomerID: customers[(int(i)+w)%len(customers)],
					Description: "bench", Priority: "medium", Skill: skill, Zip: "10001"}
				t0 := time.Now()
				s, err := o.Run(ctx, orchestrator.CreateTicket, "", in)
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				took := time.Since(t0)
				if s.State != want {
					unexpected.Add(1)
				}
				mu.Lock()
				lat = append(lat, took)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil && !errors.Is(*p, context.Canceled) {
		return res, *p
	}
	elapsed, u := time.Since(start), used.Since()
	res.Sagas, res.Unexpected = len(lat), int(unexpected.Load())
	if u.OK {
		res.CPU, res.Busy = u.Per(len(lat)), u.Share
	}
	res.PerSecond = float64(len(lat)) / elapsed.Seconds()
	if len(lat) > 0 {
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		res.P50, res.P99 = lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)]
	}
	return res, nil
}
