package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/sysops-squad/sysops/outbox"
	"github.com/sysops-squad/sysops/sqldb"
)

func newOutboxCmd(o *options) *cobra.Command {
	var service string
	cmd := &cobra.Command{
		Use:   "outbox",
		Short: "Inspect a service's outbox and requeue or purge its dead rows",
		Long: `Inspect a service's transactional outbox, straight from its database
(the service need not be running). Dead rows are events the relay gave up
on after its maximum attempts; later events of the same aggregate wait
behind them until they are retried or purged.`,
	}
	cmd.PersistentFlags().StringVar(&service, "service", "", "the service whose outbox to use (required)")
	open := func(ctx context.Context) (*sqldb.DB, error) {
		return o.openServiceDB(ctx, service, outbox.MigrationSet, outbox.Migrations())
	}
	seqArgs := func(args []string) ([]int64, error) {
		var seqs []int64
		for _, a := range args {
			n, err := strconv.ParseInt(a, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%q is not an outbox row number (seq)", a)
			}
			seqs = append(seqs, n)
		}
		return seqs, nil
	}

	var status string
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List outbox rows in one state (dead by default) and the outbox's stats",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			db, err := open(cmd.Context())
			if err != nil {
				return err
			}
			defer db.Close()
			rows, err := outbox.List(cmd.Context(), db, outbox.ListOptions{Status: outbox.Status(status), Limit: limit})
			if err != nil {
				return err
			}
			stats, err := outbox.GetStats(cmd.Context(), db)
			if err != nil {
				return err
			}
			printRows(cmd.OutOrStdout(), rows)
			fmt.Fprintf(cmd.OutOrStdout(), "\npending %d (oldest %.1fs), sent %d, dead %d\n",
				stats.Pending, stats.OldestPendingAge, stats.Sent, stats.Dead)
			return nil
		},
	}
	list.Flags().StringVar(&status, "status", "dead", "pending, sent or dead")
	list.Flags().IntVar(&limit, "limit", 100, "most rows to list")

	// A command names its rows, or asks for all of them with --all:
	// forgetting the numbers must not purge every dead row.
	deadRows := func(use, short, done string, some func(ctx context.Context, db *sqldb.DB, seqs ...int64) (int64, error),
		all func(ctx context.Context, db *sqldb.DB) (int64, error)) *cobra.Command {
		var every bool
		c := &cobra.Command{
			Use:   use + " SEQ... | --all",
			Short: short,
			RunE: func(cmd *cobra.Command, args []string) error {
				seqs, err := seqArgs(args)
				if err != nil {
					return err
				}
				if err := numbersOrAll(len(seqs), every, "dead rows", use, "sysops outbox list"); err != nil {
					return err
				}
				db, err := open(cmd.Context())
				if err != nil {
					return err
				}
				defer db.Close()
				var n int64
				if every {
					n, err = all(cmd.Context(), db)
				} else {
					n, err = some(cmd.Context(), db, seqs...)
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%d dead rows %s\n", n, done)
				return nil
			},
		}
		c.Flags().BoolVar(&every, "all", false, "every dead row of the service")
		return c
	}
	retry := deadRows("retry", "Return dead rows to pending with a fresh attempt budget",
		"back to pending", outbox.Retry, outbox.RetryAll)
	purge := deadRows("purge", "Delete dead rows: their events are dropped for good",
		"purged", outbox.Purge, outbox.PurgeAll)
	cmd.AddCommand(list, retry, purge)
	return cmd
}

// numbersOrAll checks that a command acting on some of what (dead rows,
// dead letters) got n numbers or --all, not both and not neither:
// forgetting the numbers must not act on every one.
func numbersOrAll(n int, every bool, what, use, list string) error {
	switch {
	case every && n > 0:
		return fmt.Errorf("give %s' numbers or --all, not both", what)
	case !every && n == 0:
		return fmt.Errorf("name the %s to %s by number (see %s), or pass --all for every one", what, use, list)
	}
	return nil
}

func printRows(w io.Writer, rows []outbox.Row) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tEVENT\tAGGREGATE\tSTATUS\tATTEMPTS\tLAST ERROR")
	for _, r := range rows {
		fmt.Fprintf(tw, "%d\t%s %s\t%s %s #%d\t%s\t%d\t%s\n", r.Seq, r.EventType, r.EventID,
			r.AggregateType, r.AggregateID, r.AggregateSeq, r.Status, r.Attempts, r.LastError)
	}
	tw.Flush()
}

// openServiceDB opens a service's own database, straight (the service need
// not be running). It creates and migrates nothing: a database that does
// not exist (a --data-dir or --postgres other than the system's) or whose
// schema of the set is not this build's (a system of another version,
// perhaps running) is an error that says so, and the command changes
// nothing.
func (o *options) openServiceDB(ctx context.Context, service, set string, migrations fs.FS) (*sqldb.DB, error) {
	if service == "" {
		return nil, fmt.Errorf("--service is required (one of: %s)", knownServices())
	}
	if !isService(service) {
		return nil, fmt.Errorf("unknown service %q (known: %s)", service, knownServices())
	}
	url, err := sqldb.Locate(ctx, o.databaseBase(), service, sqldb.ProvisionConfig{Prefix: o.dbPrefixFor()})
	if err != nil {
		if errors.Is(err, sqldb.ErrNoDatabase) {
			return nil, fmt.Errorf("%w (has the system run with this %s?)", err, o.baseFlag())
		}
		return nil, err
	}
	db, err := sqldb.Open(ctx, url)
	if err != nil {
		return nil, err
	}
	if err := sqldb.CheckVersion(ctx, db, set, migrations); err != nil {
		db.Close()
		return nil, fmt.Errorf("%s: %w", service, err)
	}
	return db, nil
}

// baseFlag names the flag that chose where the databases are.
func (o *options) baseFlag() string {
	if o.postgres != "" {
		return "--postgres"
	}
	return "--data-dir"
}

func isService(name string) bool {
	for _, s := range registry() {
		if s.Name == name {
			return true
		}
	}
	return false
}
