package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/sysops-squad/sysops/internal/host"
	"github.com/sysops-squad/sysops/services/assignment"
	"github.com/sysops-squad/sysops/services/audit"
	"github.com/sysops-squad/sysops/services/billing"
	"github.com/sysops-squad/sysops/services/completion"
	"github.com/sysops-squad/sysops/services/contract"
	"github.com/sysops-squad/sysops/services/customer"
	"github.com/sysops-squad/sysops/services/gateway"
	"github.com/sysops-squad/sysops/services/location"
	"github.com/sysops-squad/sysops/services/orchestrator"
	"github.com/sysops-squad/sysops/services/reporting"
	"github.com/sysops-squad/sysops/services/survey"
	"github.com/sysops-squad/sysops/services/ticket"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// registry lists every service `sysops up` starts, in port order, with
// their defaults.
func registry() []host.Spec { return registryFor(&options{}) }

// registryFor is [registry] configured by the command's options.
func registryFor(o *options) []host.Spec {
	return []host.Spec{
		gateway.SpecWith(gateway.Config{Consistency: o.consistency}), // first: the public API on --addr itself (127.0.0.1:8080)
		location.Spec(),
		customer.Spec(),
		contract.Spec(),
		billing.Spec(),
		ticket.Spec(),
		assignment.Spec(),
		completion.Spec(),
		survey.Spec(),
		audit.Spec(),
		reporting.Spec(),
		orchestrator.Spec(),
	}
}

// options are the flags shared by every command.
type options struct {
	dataDir     string
	postgres    string
	natsURL     string
	addr        string
	dbPrefix    string
	logLevel    string
	consistency string
	dbConns     string
	replicas    string
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

func newRootCmd() *cobra.Command {
	var o options
	root := &cobra.Command{
		Use:           "sysops",
		Short:         "The Sysops Squad: data ownership and distributed transactions, run for real",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&o.dataDir, "data-dir", envOr("SYSOPS_DATA_DIR", "sysops-data"), "where SQLite files, the embedded NATS store and the topology file live (SYSOPS_DATA_DIR)")
	pf.StringVar(&o.postgres, "postgres", envOr("SYSOPS_POSTGRES", ""), "PostgreSQL server URL; every service gets its own database and login role on it (SYSOPS_POSTGRES)")
	pf.StringVar(&o.natsURL, "nats", envOr("SYSOPS_NATS", ""), "external NATS JetStream server or cluster URL; default: an embedded server (SYSOPS_NATS)")
	pf.StringVar(&o.addr, "addr", envOr("SYSOPS_ADDR", ""), "listen address; for up, the first of consecutive ports (default 127.0.0.1:8080, port 0 picks free ones); seed calls the gateway there (SYSOPS_ADDR)")
	pf.StringVar(&o.dbPrefix, "db-prefix", envOr("SYSOPS_DB_PREFIX", "sysops_"), "prefix of the PostgreSQL databases and roles (SYSOPS_DB_PREFIX)")
	pf.StringVar(&o.consistency, "consistency", envOr("SYSOPS_CONSISTENCY", gateway.Orchestrated), "how the gateway keeps cross-service workflows consistent: "+strings.Join(gateway.Consistencies, " or ")+" (SYSOPS_CONSISTENCY)")
	pf.StringVar(&o.logLevel, "log-level", envOr("SYSOPS_LOG_LEVEL", "info"), "debug, info, warn or error (SYSOPS_LOG_LEVEL)")
	pf.StringVar(&o.dbConns, "db-conns", envOr("SYSOPS_DB_CONNS", ""), "database connections each service may pool, at least 3 on PostgreSQL; default: for up on PostgreSQL, a share of two thirds of the server's max_connections, else 8 (4 per core on larger machines) (SYSOPS_DB_CONNS)")

	pf.StringVar(&o.replicas, "nats-replicas", envOr("SYSOPS_NATS_REPLICAS", ""), "replicas of every stream on an external NATS cluster, 1 to 5; default: 3 on a cluster of three or more nodes, else 1 (SYSOPS_NATS_REPLICAS)")

	root.AddCommand(newUpCmd(&o), newServeCmd(&o), newOutboxCmd(&o), newInboxCmd(&o), newDLQCmd(&o), newBenchCmd(&o), newSeedCmd(&o), newSagaCmd(&o), newVersionCmd())
	refuseUnknownSubcommands(root)
	return root
}

// refuseUnknownSubcommands makes every group under cmd (bench, saga...)
// answer an unknown subcommand with an error, as the root does, instead of
// printing its help and exiting 0; called alone, a group prints its help.
func refuseUnknownSubcommands(cmd *cobra.Command) {
	for _, c := range cmd.Commands() {
		if c.HasSubCommands() && c.Run == nil && c.RunE == nil {
			c.Args = cobra.ArbitraryArgs
			c.RunE = func(c *cobra.Command, args []string) error {
				if len(args) == 0 {
					return c.Help()
				}
				var names []string
				for _, sub := range c.Commands() {
					names = append(names, sub.Name())
				}
				return fmt.Errorf("unknown command %q for %q (one of: %s)", args[0], c.CommandPath(), strings.Join(names, ", "))
			}
		}
		refuseUnknownSubcommands(c)
	}
}

// logger checks the options that running a service needs and returns the
// logger they ask for.
func (o *options) logger(w io.Writer) (*slog.Logger, error) {
	if !slices.Contains(gateway.Consistencies, o.consistency) {
		return nil, fmt.Errorf("--consistency %q: want %s", o.consistency, strings.Join(gateway.Consistencies, " or "))
	}
	if n, err := strconv.Atoi(o.dbConns); o.dbConns != "" && (err != nil || n < 1 || n > 100) {
		return nil, fmt.Errorf("--db-conns %q: want a whole number from 1 to 100", o.dbConns)
	} else if o.postgres != "" && o.dbConns != "" && n < minPostgresConns {
		// With fewer, a service waits for itself: with one, sysops up
		// never finished starting.
		return nil, fmt.Errorf("--db-conns %d: a service on PostgreSQL needs at least %d (its relay keeps one for its lock; its requests and the relay's rounds need the others)",
			n, minPostgresConns)
	}
	if n, err := strconv.Atoi(o.replicas); o.replicas != "" && (err != nil || n < 1 || n > 5) {
		return nil, fmt.Errorf("--nats-replicas %q: want a whole number from 1 to 5", o.replicas)
	}
	if o.replicas != "" && o.replicas != "1" && o.natsURL == "" {
		return nil, fmt.Errorf("--nats-replicas %s needs --nats: the embedded server is one node", o.replicas)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})), nil
}

// minPostgresConns is the smallest pool a service on PostgreSQL may have.
const minPostgresConns = 3

// maxConns is --db-conns as a number, 0 (automatic) when unset; logger
// has checked it.
func (o *options) maxConns() int {
	n, _ := strconv.Atoi(o.dbConns)
	return n
}

// natsReplicas is --nats-replicas as a number, 0 (automatic) when unset;
// logger has checked it.
func (o *options) natsReplicas() int {
	n, _ := strconv.Atoi(o.replicas)
	return n
}

// databaseBase is where services' databases are provisioned: the
// PostgreSQL server if one is given, else the data directory.
func (o *options) databaseBase() string {
	if o.postgres != "" {
		return o.postgres
	}
	return o.dataDir
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, args []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "sysops %s (%s %s/%s%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH, vcsRevision())
		},
	}
}

func vcsRevision() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	var rev, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if rev == "" {
		return ""
	}
	return ", commit " + rev[:min(12, len(rev))] + dirty
}

func knownServices() string {
	var names []string
	for _, s := range registry() {
		names = append(names, s.Name)
	}
	return strings.Join(names, ", ")
}
