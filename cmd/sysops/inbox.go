package main

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/sysops-squad/sysops/inbox"
	"github.com/sysops-squad/sysops/internal/svc"
	"github.com/sysops-squad/sysops/services/audit"
)

func newInboxCmd(o *options) *cobra.Command {
	var service string
	cmd := &cobra.Command{
		Use:   "inbox",
		Short: "Inspect the events a service's consumer holds back, and give up on a gap",
		Long: `An event that arrives ahead of its aggregate's earlier ones is parked in the
consuming service's database and applied as soon as its predecessor
arrives. A predecessor that never comes (its outbox row was purged, or the
stream dropped it before the consumer joined) keeps the aggregate's later
events parked for good. "list" shows what is parked, straight from the
service's database; "skip" asks the running service to give up on the
missing events and apply what was parked after them (the skipped events
are lost to that consumer).`,
	}
	cmd.PersistentFlags().StringVar(&service, "service", audit.Name, "the service whose consumer to use")

	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List parked events, oldest first, with the sequence each waits for",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := hasInbox(service); err != nil {
				return err
			}
			db, err := o.openServiceDB(cmd.Context(), service, inbox.MigrationSet, inbox.Migrations())
			if err != nil {
				return err
			}
			defer db.Close()
			parked, err := inbox.ListParked(cmd.Context(), db, limit)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "CONSUMER\tAGGREGATE\tSEQUENCE\tWAITING FOR\tPARKED AT")
			for _, p := range parked {
				fmt.Fprintf(tw, "%s\t%s %s\t%d\t%d\t%s\n", p.Consumer, p.AggregateType, p.AggregateID, p.Sequence, p.Waiting,
					p.ParkedAt.Format("2006-01-02 15:04:05"))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "\n%d parked\n", len(parked))
			return nil
		},
	}
	list.Flags().IntVar(&limit, "limit", 100, "most events to list")

	var url string
	skip := &cobra.Command{
		Use:   "skip AGGREGATE_TYPE AGGREGATE_ID",
		Short: "Give up on an aggregate's missing events and apply what was parked after them (asks the running service)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := hasInbox(service); err != nil {
				return err
			}
			base, err := o.serviceURL(service, url)
			if err != nil {
				return err
			}
			var g inbox.Gap
			c := svc.NewClient(svc.NewPeers(map[string]string{service: base}), service).WithoutRetries()
			if err := c.Post(cmd.Context(), "/ops/inbox/skip", map[string]string{"aggregate_type": args[0], "aggregate_id": args[1]}, &g); err != nil {
				return fmt.Errorf("skip on %s at %s: %w", service, base, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s: skipped #%d..#%d, applied %d parked event(s)\n", g.AggregateType, g.AggregateID,
				g.From, g.To, g.Applied)
			return nil
		},
	}
	skip.Flags().StringVar(&url, "url", "", "the service's base URL (default: from the topology file in the data directory)")
	cmd.AddCommand(list, skip)
	return cmd
}

// inboxServices are the services that run an inbox consumer.
var inboxServices = []string{audit.Name}

// hasInbox says why service has no consumer to inspect, if it has none.
func hasInbox(service string) error {
	if !isService(service) {
		return fmt.Errorf("unknown service %q (known: %s)", service, knownServices())
	}
	if !slices.Contains(inboxServices, service) {
		return fmt.Errorf("service %q runs no inbox consumer (%s does)", service, strings.Join(inboxServices, ", "))
	}
	return nil
}

// serviceURL returns override if set, or else the service's URL as the
// topology file in the data directory records it.
func (o *options) serviceURL(service, override string) (string, error) {
	if override != "" {
		return override, nil
	}
	t, err := readTopology(o.dataDir)
	if err != nil {
		return "", err
	}
	e, ok := t.Services[service]
	if !ok || e.URL == "" {
		return "", fmt.Errorf("no running %s is recorded in the topology file of %s; start the system there or pass --url", service, o.dataDir)
	}
	return e.URL, nil
}
