package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/sysops-squad/sysops/saga"
	"github.com/sysops-squad/sysops/services/orchestrator"
	"github.com/sysops-squad/sysops/sqldb"
)

func newSagaCmd(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "saga",
		Short: "Inspect the orchestrator's sagas and act on those that need attention",
		Long: `Inspect the orchestrator's durable saga log, straight from its database (the
orchestrator need not be running), and act on sagas that need attention: a
compensation that kept failing past its retry budget stops the saga in
needs_attention, keeping the error, until a person retries it (after the
participant recovers), skips the stuck step, or resolves it by hand.
Running orchestrators pick up a retried or skipped saga within a second.`,
	}
	open := func(ctx context.Context) (*sqldb.DB, error) {
		return o.openServiceDB(ctx, orchestrator.Name, orchestrator.Name, saga.Migrations())
	}
	withDB := func(fn func(ctx context.Context, db *sqldb.DB, out io.Writer, args []string) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			db, err := open(cmd.Context())
			if err != nil {
				return err
			}
			defer db.Close()
			return fn(cmd.Context(), db, cmd.OutOrStdout(), args)
		}
	}

	var f saga.Filter
	var state string
	list := &cobra.Command{
		Use:   "list",
		Short: "List sagas, most recently updated first",
		Args:  cobra.NoArgs,
		RunE: withDB(func(ctx context.Context, db *sqldb.DB, out io.Writer, _ []string) error {
			if f.Limit < 1 {
				return fmt.Errorf("--limit %d: want at least 1", f.Limit)
			}
			f.State = saga.State(state)
			sagas, err := saga.List(ctx, db, f)
			if err != nil {
				return err
			}
			if len(sagas) == 0 {
				// A bare header reads like a listing that failed.
				msg := "no sagas"
				if f.State != "" {
					msg += fmt.Sprintf(" in state %s", f.State)
				}
				if f.Definition != "" {
					msg += fmt.Sprintf(" of definition %q", f.Definition)
				}
				_, err := fmt.Fprintln(out, msg)
				return err
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SAGA\tDEFINITION\tSTATE\tUPDATED\tREASON / ERROR")
			for _, s := range sagas {
				fmt.Fprintf(tw, "%s\t%s v%d\t%s\t%s\t%s\n", s.ID, s.Definition, s.Version, s.State,
					s.UpdatedAt.Format("2006-01-02 15:04:05"), firstNonEmpty(s.LastError, s.Reason))
			}
			return tw.Flush()
		}),
	}
	list.Flags().StringVar(&state, "state", "", "only sagas in this state (running, compensating, committed, compensated, needs_attention, resolved)")
	list.Flags().StringVar(&f.Definition, "definition", "", "only sagas of this definition")
	list.Flags().IntVar(&f.Limit, "limit", 100, "most sagas to list")

	show := &cobra.Command{
		Use:   "show SAGA",
		Short: "Show a saga and its steps, as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: withDB(func(ctx context.Context, db *sqldb.DB, out io.Writer, args []string) error {
			s, err := saga.Get(ctx, db, args[0])
			if err != nil {
				return err
			}
			enc := json.NewEncoder(out)
			enc.SetIndent("", "  ")
			return enc.Encode(s)
		}),
	}
	act := func(use, short, done string, fn func(ctx context.Context, db *sqldb.DB, id string) error) *cobra.Command {
		return &cobra.Command{
			Use:   use + " SAGA",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: withDB(func(ctx context.Context, db *sqldb.DB, out io.Writer, args []string) error {
				if err := fn(ctx, db, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(out, "saga %s %s\n", args[0], done)
				return nil
			}),
		}
	}
	retry := act("retry", "Give the stuck step a fresh retry budget and hand the saga back to the orchestrators",
		"handed back with a fresh budget", saga.Retry)
	skip := act("skip", "Skip the stuck step (it was done by hand, or need not be) and go on",
		"handed back past its stuck step", saga.Skip)
	var note, reason string
	resolve := act("resolve", "Close a saga that needs attention by hand (--note says how)", "resolved",
		func(ctx context.Context, db *sqldb.DB, id string) error {
			if note == "" {
				return fmt.Errorf("--note is required: say how the saga was settled")
			}
			return saga.Resolve(ctx, db, id, note)
		})
	resolve.Flags().StringVar(&note, "note", "", "how it was settled (required)")
	cancel := act("cancel", "Turn a running saga back: its steps are compensated", "asked to turn back",
		func(ctx context.Context, db *sqldb.DB, id string) error { return saga.Cancel(ctx, db, id, reason) })
	cancel.Flags().StringVar(&reason, "reason", "cancelled by an operator", "why")
	cmd.AddCommand(list, show, retry, skip, resolve, cancel)
	return cmd
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
