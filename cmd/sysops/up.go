package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/sysops-squad/sysops/internal/host"
	"github.com/sysops-squad/sysops/natsjs"
	"github.com/sysops-squad/sysops/sqldb"
)

// shutdownBudget bounds a graceful stop after SIGINT or SIGTERM.
const shutdownBudget = 10 * time.Second

const defaultAddr = "127.0.0.1:8080"

func newUpCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "up",
		Short: "Run every service on this machine, each with its own database",
		Long: `Run the whole Sysops Squad system in one process: an embedded NATS
server with JetStream (unless --nats names one), then every service on its own
loopback port with its own database: an SQLite file in the data directory, or,
with --postgres, a database and login role of its own on that server. The
topology (broker and service URLs) is written to the data directory so that
processes started with 'sysops serve' find everything. Ctrl-C stops it all.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runUp(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
}

// running is what up and serve have started, for an orderly stop.
type running struct {
	hosts []*host.Host
	nats  *natsjs.Server
}

func (r *running) shutdown(logger *slog.Logger) error {
	if len(r.hosts) == 0 && r.nats == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), shutdownBudget-time.Second)
	defer cancel()
	var errs []error
	for _, h := range r.hosts {
		if err := h.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", h.Name(), err))
		}
	}
	if r.nats != nil {
		r.nats.Shutdown()
	}
	logger.Info("stopped")
	return errors.Join(errs...)
}

// withSignals returns a context that ends on SIGINT or SIGTERM. It is
// installed before anything starts, so a signal during start-up stops
// sysops gracefully too.
func withSignals(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}

// wait blocks until ctx ends (a signal, see withSignals), or until a
// service's server stops on its own (an error).
func (r *running) wait(ctx context.Context, logger *slog.Logger) error {
	failed := make(chan error, len(r.hosts))
	for _, h := range r.hosts {
		go func() {
			if err := <-h.Done(); err != nil {
				failed <- fmt.Errorf("%s: %w", h.Name(), err)
			}
		}()
	}
	select {
	case <-ctx.Done():
		logger.Info("shutting down", "budget", shutdownBudget)
		return nil
	case err := <-failed:
		return err
	}
}

// startNATS returns the broker URL: --nats if given, else that of an
// embedded server storing its data under the data directory.
func startNATS(o *options, r *running) (string, error) {
	if o.natsURL != "" {
		return o.natsURL, nil
	}
	srv, err := natsjs.RunServer(natsjs.ServerConfig{StoreDir: filepath.Join(o.dataDir, "nats")})
	if err != nil {
		return "", err
	}
	r.nats = srv
	return srv.ClientURL(), nil
}

// serviceAddrs returns the listen address of each service: consecutive
// ports from --addr's (the gateway, first, gets --addr itself), or free
// ports when its port is 0.
func serviceAddrs(addr string, n int) ([]string, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--addr %q: %w", addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port+n-1 > 65535 {
		return nil, fmt.Errorf("--addr %q: bad port", addr)
	}
	out := make([]string, n)
	for i := range out {
		if port == 0 {
			out[i] = net.JoinHostPort(h, "0")
		} else {
			out[i] = net.JoinHostPort(h, strconv.Itoa(port+i))
		}
	}
	return out, nil
}

// poolShare is how many connections each of n services may pool when
// they all use the PostgreSQL server at base (0 for SQLite: its own
// default). Together they take at most two thirds of the server's
// connections, leaving the rest to other clients; each service also holds
// one session outside its pool (its relay's LISTEN), and one inside it
// (its relay's lock), so a pool has at least 3. Without a cap, twelve
// pools of eight filled a default server (max_connections 100) under
// load, and then every service failed on "too many clients".
func poolShare(ctx context.Context, base string, n int) (int, error) {
	if base == "" {
		return 0, nil
	}
	db, err := sqldb.Open(ctx, base, sqldb.Options{MaxReaders: 1})
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var limit, reserved int
	if err := db.QueryRowContext(ctx, `SELECT current_setting('max_connections')::int,
		current_setting('superuser_reserved_connections')::int`).Scan(&limit, &reserved); err != nil {
		return 0, fmt.Errorf("read the server's max_connections: %w", err)
	}
	return min(max(minPostgresConns, (limit-reserved)*2/3/n-1), 8), nil
}

func runUp(ctx context.Context, o *options, stdout, stderr io.Writer) (err error) {
	ctx, stop := withSignals(ctx)
	defer stop()
	logger, err := o.logger(stderr)
	if err != nil {
		return err
	}
	if err := sqldb.EnsureDir(o.dataDir); err != nil {
		return err
	}
	specs := registryFor(o)
	addrs, err := serviceAddrs(cmp.Or(o.addr, defaultAddr), len(specs))
	if err != nil {
		return err
	}
	// Listen on every address first: a port in use is found before
	// anything starts, and every service knows its peers' URLs.
	listeners := make([]net.Listener, len(specs))
	defer func() {
		if err != nil {
			for _, ln := range listeners {
				if ln != nil {
					ln.Close()
				}
			}
		}
	}()
	topo := Topology{Services: map[string]TopologyEntry{}}
	for i, s := range specs {
		if listeners[i], err = host.Listen(s.Name, addrs[i]); err != nil {
			return err
		}
		topo.Services[s.Name] = TopologyEntry{URL: "http://" + listeners[i].Addr().String()}
	}

	r := &running{}
	defer func() {
		if err != nil {
			_ = r.shutdown(logger)
		}
	}()
	if topo.NATSURL, err = startNATS(o, r); err != nil {
		return err
	}
	maxConns := o.maxConns()
	if maxConns == 0 {
		if maxConns, err = poolShare(ctx, o.postgres, len(specs)); err != nil {
			return err
		}
		if maxConns > 0 {
			logger.Info("database pools sized to share the server", "connections_per_service", maxConns)
		}
	}
	for i, s := range specs {
		dbURL, err := sqldb.Provision(ctx, o.databaseBase(), s.Name, sqldb.ProvisionConfig{Prefix: o.dbPrefixFor()})
		if err != nil {
			return err
		}
		h, err := host.Start(ctx, host.Config{
			Spec: s, DatabaseURL: dbURL, NATSURL: topo.NATSURL,
			Listener: listeners[i], Peers: topo.peers(s.Name), Logger: logger, MaxConns: maxConns, NATSReplicas: o.natsReplicas(),
		})
		if err != nil {
			return err
		}
		listeners[i] = nil // the host owns it now
		r.hosts = append(r.hosts, h)
		topo.Services[s.Name] = TopologyEntry{URL: h.URL(), Database: h.DatabaseURL()}
	}
	if err := updateTopology(o.dataDir, func(t *Topology) { *t = topo }); err != nil {
		return err
	}
	printTable(stdout, topo, r.nats != nil, r.hosts[0].StreamReplicas())
	logger.Info("sysops is up; Ctrl-C stops it", "data_dir", o.dataDir, "services", len(r.hosts))

	waitErr := r.wait(ctx, logger)
	return errors.Join(waitErr, r.shutdown(logger))
}

// dbPrefixFor is the database name prefix: --db-prefix on PostgreSQL,
// none for SQLite files.
func (o *options) dbPrefixFor() string {
	if o.postgres == "" {
		return ""
	}
	return o.dbPrefix
}

func printTable(w io.Writer, t Topology, embedded bool, replicas int) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tURL\tDATABASE")
	for _, s := range registry() {
		if e, ok := t.Services[s.Name]; ok {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", s.Name, e.URL, e.Database)
		}
	}
	kind := fmt.Sprintf("external, streams with %d replica", replicas)
	if replicas > 1 {
		kind += "s"
	}
	if embedded {
		kind = "embedded JetStream"
	}
	fmt.Fprintf(tw, "nats\t%s\t(%s)\n", t.NATSURL, kind)
	tw.Flush()
}
