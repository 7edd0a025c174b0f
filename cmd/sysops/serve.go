package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/sysops-squad/sysops/internal/host"
	"github.com/sysops-squad/sysops/internal/svc"
	"github.com/sysops-squad/sysops/sqldb"
)

func newServeCmd(o *options) *cobra.Command {
	var peerFlags []string
	cmd := &cobra.Command{
		Use:   "serve <service>",
		Short: "Run one service as its own process",
		Long: `Run one service as its own process, with its own database. The broker
and the other services are found in the topology file of the data directory
(written by 'sysops up'), unless --nats and --peer say otherwise. The service
records its own address in the topology file.

Services: ` + knownServices(),
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runServe(cmd.Context(), o, args[0], peerFlags, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringArrayVar(&peerFlags, "peer", nil, "another service's URL, as name=http://host:port (repeatable; overrides the topology file)")
	return cmd
}

func runServe(ctx context.Context, o *options, name string, peerFlags []string, stdout, stderr io.Writer) (err error) {
	ctx, stop := withSignals(ctx)
	defer stop()
	logger, err := o.logger(stderr)
	if err != nil {
		return err
	}
	var spec *host.Spec
	for _, s := range registryFor(o) {
		if s.Name == name {
			spec = &s
		}
	}
	if spec == nil {
		return fmt.Errorf("unknown service %q (known: %s)", name, knownServices())
	}
	if err := sqldb.EnsureDir(o.dataDir); err != nil {
		return err
	}
	topo, err := readTopology(o.dataDir)
	if err != nil {
		return err
	}
	natsURL := cmp.Or(o.natsURL, topo.NATSURL)
	if natsURL == "" {
		return errors.New("no NATS server: pass --nats URL (or SYSOPS_NATS), or run 'sysops up' first so that its topology file names one")
	}
	overrides := map[string]string{}
	for _, p := range peerFlags {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" || !strings.HasPrefix(v, "http") {
			return fmt.Errorf("--peer %q: want name=http://host:port", p)
		}
		overrides[k] = v
	}
	peersOf := func(t Topology) map[string]string {
		m := t.peers(name)
		for k, v := range overrides {
			m[k] = v
		}
		return m
	}
	// The topology file is read again every second, so that peers started
	// after this one are found (--peer wins over it).
	peers := svc.NewPeers(peersOf(topo))
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if latest, err := readTopology(o.dataDir); err == nil {
					peers.Set(peersOf(latest))
				}
			}
		}
	}()
	addr := cmp.Or(o.addr, "127.0.0.1:0")

	dbURL, err := sqldb.Provision(ctx, o.databaseBase(), name, sqldb.ProvisionConfig{Prefix: o.dbPrefixFor()})
	if err != nil {
		return err
	}
	h, err := host.Start(ctx, host.Config{Spec: *spec, DatabaseURL: dbURL, NATSURL: natsURL, Addr: addr, LivePeers: peers, Logger: logger,
		MaxConns: o.maxConns(), NATSReplicas: o.natsReplicas()})
	if err != nil {
		return err
	}
	r := &running{hosts: []*host.Host{h}}
	if err := updateTopology(o.dataDir, func(t *Topology) {
		t.NATSURL = cmp.Or(t.NATSURL, natsURL)
		t.Services[name] = TopologyEntry{URL: h.URL(), Database: h.DatabaseURL()}
	}); err != nil {
		return errors.Join(err, r.shutdown(logger))
	}
	printTable(stdout, Topology{NATSURL: natsURL, Services: map[string]TopologyEntry{name: {URL: h.URL(), Database: h.DatabaseURL()}}}, false, h.StreamReplicas())
	waitErr := r.wait(ctx, logger)
	return errors.Join(waitErr, r.shutdown(logger))
}
