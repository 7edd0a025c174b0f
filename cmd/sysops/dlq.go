package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/sysops-squad/sysops/natsjs"
)

func newDLQCmd(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "Inspect the dead-letter stream, and send dead letters back or discard them",
		Long: `A message a consumer cannot take (a malformed envelope, an event type it
has no handler for, a handler's permanent refusal, too many failed
deliveries) goes to the dead-letter stream with the reason. Until it is
dealt with, the later events of its aggregate wait, parked, in that
consumer. "list" shows the dead letters; "redrive" sends them back to the
subject they came from, once their cause is fixed, for the consumers to
take again; "discard" drops them for good (then "sysops inbox skip" lets
the aggregate's later events go on without them). The broker is --nats,
or the one recorded in the data directory's topology file by a running
"sysops up".`,
	}
	connect := func(ctx context.Context) (*natsjs.Broker, error) {
		url := o.natsURL
		if url == "" {
			t, err := readTopology(o.dataDir)
			if err != nil {
				return nil, err
			}
			if t.NATSURL == "" {
				return nil, fmt.Errorf("no broker is recorded in the topology file of %s; start the system there or pass --nats", o.dataDir)
			}
			url = t.NATSURL
		}
		return natsjs.Connect(ctx, natsjs.Config{URL: url, Name: "sysops dlq"})
	}

	var after uint64
	var limit int
	list := &cobra.Command{
		Use:   "list",
		Short: "List dead letters, oldest first, with the consumer that gave up on each and why",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			defer b.Close()
			dls, err := b.DeadLetters(cmd.Context(), after, limit)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SEQ\tAT\tCONSUMER\tSUBJECT\tID\tDELIVERIES\tREASON")
			for _, dl := range dls {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\n", dl.DLQSequence, dl.Time.Local().Format(time.DateTime), dl.Consumer,
					dl.Subject, dl.OriginalID, dl.Deliveries, dl.Reason)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "\n%d dead letter(s)\n", len(dls))
			return nil
		},
	}
	list.Flags().Uint64Var(&after, "after", 0, "list those after this dead-letter sequence")
	list.Flags().IntVar(&limit, "limit", 100, "most dead letters to list")

	// A command names its dead letters, or asks for all of them with
	// --all: forgetting the numbers must not act on every one.
	each := func(use, short, done string, act func(ctx context.Context, b *natsjs.Broker, seq uint64) (string, error)) *cobra.Command {
		var every bool
		c := &cobra.Command{
			Use:   use + " SEQ... | --all",
			Short: short,
			RunE: func(cmd *cobra.Command, args []string) error {
				var seqs []uint64
				for _, a := range args {
					n, err := strconv.ParseUint(a, 10, 64)
					if err != nil || n == 0 {
						return fmt.Errorf("%q is not a dead letter's number (SEQ in sysops dlq list)", a)
					}
					seqs = append(seqs, n)
				}
				if err := numbersOrAll(len(seqs), every, "dead letters", use, "sysops dlq list"); err != nil {
					return err
				}
				b, err := connect(cmd.Context())
				if err != nil {
					return err
				}
				defer b.Close()
				if every {
					for after := uint64(0); ; {
						dls, err := b.DeadLetters(cmd.Context(), after, 100)
						if err != nil {
							return err
						}
						if len(dls) == 0 {
							break
						}
						for _, dl := range dls {
							seqs = append(seqs, dl.DLQSequence)
						}
						after = dls[len(dls)-1].DLQSequence
					}
				}
				var failed []string
				for _, seq := range seqs {
					what, err := act(cmd.Context(), b, seq)
					if err != nil {
						failed = append(failed, err.Error())
						continue
					}
					fmt.Fprintf(cmd.OutOrStdout(), "%d %s %s\n", seq, done, what)
				}
				if len(failed) > 0 {
					return errors.New(strings.Join(failed, "; "))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%d dead letter(s) %s\n", len(seqs), done)
				return nil
			},
		}
		c.Flags().BoolVar(&every, "all", false, "every dead letter")
		return c
	}
	redrive := each("redrive", "Send dead letters back to the subject they came from, for the consumers to take again",
		"redriven", func(ctx context.Context, b *natsjs.Broker, seq uint64) (string, error) {
			dl, err := b.Redrive(ctx, seq)
			return fmt.Sprintf("(%s to %s)", dl.OriginalID, dl.Subject), err
		})
	discard := each("discard", "Drop dead letters for good",
		"discarded", func(ctx context.Context, b *natsjs.Broker, seq uint64) (string, error) {
			return "", b.DiscardDeadLetter(ctx, seq)
		})
	cmd.AddCommand(list, redrive, discard)
	return cmd
}
