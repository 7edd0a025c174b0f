package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"github.com/sysops-squad/sysops/internal/seed"
	"github.com/sysops-squad/sysops/services/gateway"
)

func newSeedCmd(o *options) *cobra.Command {
	var api string
	cmd := &cobra.Command{
		Use:   "seed",
		Short: "Load a demo data set into a running system, through its public API",
		Long: `Loads a demo data set into the system that ` + "`sysops up`" + ` is running:
experts across the country, customers on every plan, and tickets in every
state (open, assigned, completed with answered surveys, cancelled). It goes
through the public API only, so every row is written by the service that
owns it; every request carries an Idempotency-Key, so seeding twice adds
nothing the second time.

The API is --api; else the gateway on --addr, where ` + "`sysops up --addr`" + `
put it; else the gateway's URL in the data directory's topology file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if api == "" && o.addr != "" {
				api = "http://" + o.addr
			}
			if api == "" {
				topo, err := readTopology(o.dataDir)
				if err != nil {
					return err
				}
				api = topo.Services[gateway.Name].URL
				if api == "" {
					api = "http://" + defaultAddr
				}
			}
			st, err := seed.Run(cmd.Context(), api)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "seeded %s: %s\n", api, st)
			return nil
		},
	}
	cmd.Flags().StringVar(&api, "api", "", "the public API's base URL (default: the gateway on --addr, else the one of the topology in --data-dir, else http://"+defaultAddr+")")
	return cmd
}
