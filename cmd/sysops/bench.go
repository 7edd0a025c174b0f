package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/sysops-squad/sysops/lab/outboxbench"
	"github.com/sysops-squad/sysops/lab/sagabench"
	"github.com/sysops-squad/sysops/natsjs"
	"github.com/sysops-squad/sysops/sqldb"
)

func newBenchCmd(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure a pattern on this machine and print the setup and the figures",
	}
	var profile string
	var stopProfile func() error
	cmd.PersistentFlags().StringVar(&profile, "cpuprofile", "", "write a CPU profile of this process (services, relays, embedded JetStream; not the database server) to this file, for go tool pprof")
	cmd.PersistentPreRunE = func(cmd *cobra.Command, args []string) (err error) {
		stopProfile, err = startCPUProfile(profile)
		return err
	}
	cmd.PersistentPostRunE = func(cmd *cobra.Command, args []string) error { return stopProfile() }
	var cfg outboxbench.Config
	var phases string
	ob := &cobra.Command{
		Use:   "outbox",
		Short: "Outbox end to end: throughput vs no outbox, commit-to-effect latency, backlog drain, broker outage",
		Long: `Runs the transactional outbox end to end on this machine: writers commit
one business row and one event per transaction, the relay publishes to
JetStream, and a consumer applies each event's effect through the inbox in
its own database. Measures, in one run:

  - throughput with the outbox (commit to effect committed) against the same
    writers with no outbox at all;
  - commit-to-effect latency p50/p99/max at a fixed offered load;
  - how fast one relay drains a backlog of pending rows;
  - the broker going away (every connection to it cut, through a proxy)
    for --outage while writers go on at --rate: how many events commit
    meanwhile, how soon after its return they are all applied, the
    longest commit-to-effect time, and the rows left dead.

SQLite files in a temporary directory by default; with --postgres, the
databases sysops_bench_producer and sysops_bench_consumer on that server.
JetStream is embedded unless --nats names a server.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if phases != "" {
				cfg.Phases = strings.Split(phases, ",")
			}
			if err := cfg.Validate(); err != nil {
				return benchFlagError(err)
			}
			tmp, err := os.MkdirTemp("", "sysops-bench")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			base := tmp
			if o.postgres != "" {
				base = o.postgres
			}
			prov := sqldb.ProvisionConfig{Prefix: "sysops_bench_"}
			if cfg.ProducerURL, err = sqldb.Provision(ctx, base, "producer", prov); err != nil {
				return err
			}
			if cfg.ConsumerURL, err = sqldb.Provision(ctx, base, "consumer", prov); err != nil {
				return err
			}
			cfg.NATSURL = o.natsURL
			if cfg.NATSURL == "" {
				srv, err := natsjs.RunServer(natsjs.ServerConfig{StoreDir: filepath.Join(tmp, "nats")})
				if err != nil {
					return err
				}
				defer srv.Shutdown()
				cfg.NATSURL = srv.ClientURL()
			}
			rep, err := outboxbench.Run(ctx, cfg)
			rep.Print(cmd.OutOrStdout())
			return err
		},
	}
	f := ob.Flags()
	f.IntVar(&cfg.Writers, "writers", 8, "concurrent business writers")
	f.DurationVar(&cfg.Duration, "duration", 5*time.Second, "length of each throughput phase")
	f.IntVar(&cfg.Rate, "rate", 1000, "offered load of the latency and outage phases, events/s")
	f.DurationVar(&cfg.LatencyDuration, "latency-duration", 5*time.Second, "length of the latency phase")
	f.IntVar(&cfg.Backlog, "backlog", 100_000, "pending rows in the drain phase")
	f.DurationVar(&cfg.Outage, "outage", 5*time.Second, "how long the broker is away in the outage phase")
	f.StringVar(&phases, "phases", "", "comma-separated subset of throughput,latency,drain,outage (default all)")
	cmd.AddCommand(ob, newSagaBenchCmd(o))
	return cmd
}

// benchFlagError is an error of [outboxbench.Config.Validate] in the
// words of the command's flags.
func benchFlagError(err error) error {
	se, ok := errors.AsType[*outboxbench.SettingError](err)
	if !ok {
		return err
	}
	flag := map[string]string{"Writers": "--writers", "Duration": "--duration", "Rate": "--rate",
		"LatencyDuration": "--latency-duration", "Backlog": "--backlog", "Outage": "--outage", "Phases": "--phases"}[se.Setting]
	if flag == "" {
		return err
	}
	return fmt.Errorf("%s %s", flag, se.Problem)
}

// startCPUProfile starts a CPU profile written to path, if path is set,
// and returns the function that stops it and closes the file.
func startCPUProfile(path string) (stop func() error, err error) {
	if path == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

func newSagaBenchCmd(o *options) *cobra.Command {
	var cfg sagabench.Config
	var levels string
	sb := &cobra.Command{
		Use:   "saga",
		Short: "The create-ticket saga with its real participants: sagas/s and latency by concurrency, committed and compensated, and a participant outage",
		Long: `Runs the create-ticket saga against its real participants — ticket,
customer and assignment (with location for their zip copies), each with its
own database, called over loopback HTTP — with the orchestrator logging
every step in its own database. For each concurrency it prints completed
sagas per second and p50/p99 latency, for sagas that commit and for sagas
whose assignment is refused (the steps before it compensated). Then the
assignment participant goes away (every connection to it cut) for
--outage while sagas run at the largest concurrency: it prints how the
sagas begun around it ended (committed, compensated, needing attention),
the longest one, and how soon after its return the last one ended.

SQLite files in a temporary directory by default; with --postgres, fresh
databases sysops_bench_saga_<service> on that server, dropped afterwards.
JetStream is embedded unless --nats names a server.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if cfg.Duration <= 0 {
				return fmt.Errorf("--duration %v: want a positive length", cfg.Duration)
			}
			if cfg.Outage < 0 {
				return fmt.Errorf("--outage %v: want a length, or 0 to skip the outage scenario", cfg.Outage)
			}
			tmp, err := os.MkdirTemp("", "sysops-bench")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			base := tmp
			if o.postgres != "" {
				base = o.postgres
			}
			prov := sqldb.ProvisionConfig{Prefix: "sysops_bench_saga_"}
			cfg.URLs = map[string]string{}
			for _, s := range sagabench.Services {
				if err := sqldb.Deprovision(ctx, base, s, prov); err != nil {
					return err
				}
				if cfg.URLs[s], err = sqldb.Provision(ctx, base, s, prov); err != nil {
					return err
				}
			}
			defer func() {
				for _, s := range sagabench.Services {
					_ = sqldb.Deprovision(context.WithoutCancel(ctx), base, s, prov)
				}
			}()
			cfg.NATSURL = o.natsURL
			if cfg.NATSURL == "" {
				srv, err := natsjs.RunServer(natsjs.ServerConfig{StoreDir: filepath.Join(tmp, "nats")})
				if err != nil {
					return err
				}
				defer srv.Shutdown()
				cfg.NATSURL = srv.ClientURL()
			}
			for _, l := range strings.Split(levels, ",") {
				n, err := strconv.Atoi(strings.TrimSpace(l))
				if err != nil || n < 1 {
					return fmt.Errorf("--concurrency %q: want positive whole numbers separated by commas", levels)
				}
				cfg.Concurrency = append(cfg.Concurrency, n)
			}
			rep, err := sagabench.Run(ctx, cfg)
			rep.Print(cmd.OutOrStdout())
			return err
		},
	}
	sb.Flags().StringVar(&levels, "concurrency", "1,16,64", "sagas in flight, one level per number")
	sb.Flags().DurationVar(&cfg.Duration, "duration", 5*time.Second, "length of each level")
	sb.Flags().DurationVar(&cfg.Outage, "outage", 3*time.Second, "how long the assignment participant is away in the outage scenario; 0 skips it")
	return sb
}
