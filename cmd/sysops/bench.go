package main

import (
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/sysops-squad/sysops/lab/outboxbench"
	"github.com/sysops-squad/sysops/natsjs"
	"github.com/sysops-squad/sysops/sqldb"
)

func newBenchCmd(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure a pattern on this machine and print the setup and the figures",
	}
	var cfg outboxbench.Config
	var phases string
	ob := &cobra.Command{
		Use:   "outbox",
		Short: "Outbox end to end: throughput vs no outbox, commit-to-effect latency, backlog drain",
		Long: `Runs the transactional outbox end to end on this machine: writers commit
one business row and one event per transaction, the relay publishes to
JetStream, and a consumer applies each event's effect through the inbox in
its own database. Measures, in one run:

  - throughput with the outbox (commit to effect committed) against the same
    writers with no outbox at all;
  - commit-to-effect latency p50/p99/max at a fixed offered load;
  - how fast one relay drains a backlog of pending rows.

SQLite files in a temporary directory by default; with --postgres, the
databases sysops_bench_producer and sysops_bench_consumer on that server.
JetStream is embedded unless --nats names a server.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
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
			if phases != "" {
				cfg.Phases = strings.Split(phases, ",")
			}
			rep, err := outboxbench.Run(ctx, cfg)
			rep.Print(cmd.OutOrStdout())
			return err
		},
	}
	f := ob.Flags()
	f.IntVar(&cfg.Writers, "writers", 8, "concurrent business writers")
	f.DurationVar(&cfg.Duration, "duration", 5*time.Second, "length of each throughput phase")
	f.IntVar(&cfg.Rate, "rate", 1000, "offered load of the latency phase, events/s")
	f.DurationVar(&cfg.LatencyDuration, "latency-duration", 5*time.Second, "length of the latency phase")
	f.IntVar(&cfg.Backlog, "backlog", 100_000, "pending rows in the drain phase")
	f.StringVar(&phases, "phases", "", "comma-separated subset of throughput,latency,drain (default all)")
	cmd.AddCommand(ob)
	return cmd
}
