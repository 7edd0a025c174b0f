package inbox

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/natsjs"
	"github.com/sysops-squad/sysops/sqldb"
)

// Subscriber delivers batches of messages from a durable consumer.
// *natsjs.Broker is one.
type Subscriber interface {
	SubscribeBatch(ctx context.Context, spec natsjs.ConsumerSpec, maxBatch int, h natsjs.BatchHandler) (*natsjs.Subscription, error)
}

var _ Subscriber = (*natsjs.Broker)(nil)

// Config configures a [Consumer]. Fields marked required must be set; the
// zero value of the others means their default.
type Config struct {
	// Name is the durable consumer's name and the inbox's consumer key.
	// Required.
	Name string
	// Stream to consume. Required.
	Stream string
	// Subjects filters the stream; empty means all of it.
	Subjects []string
	// Handlers maps each event type the consumer handles to its effect.
	// An event of another type is dead-lettered. Required.
	Handlers map[string]ApplyFunc
	// MaxBatch caps how many messages are applied in one transaction.
	// Default 256.
	MaxBatch int
	// MaxDeliver, AckWait and Backoff are passed to the broker consumer
	// (see natsjs.ConsumerSpec).
	MaxDeliver int
	AckWait    time.Duration
	Backoff    func(delivery int) time.Duration
	// Retention is how long processed-message records are kept. It must
	// exceed the longest time a duplicate can arrive. Default 7 days.
	Retention time.Duration
	// GapTimeout, if set, is how long an event may stay parked waiting for
	// a predecessor before the consumer gives up on the missing events and
	// applies what it has (see [Consumer.SkipGap]); the skipped events are
	// lost to it, and each skip is logged. Zero, the default, waits for
	// ever: an operator decides, with SkipGap.
	GapTimeout time.Duration
	Logger     *slog.Logger
}

// Consumer applies events from a stream through the inbox.
type Consumer struct {
	db  *sqldb.DB
	sub Subscriber
	cfg Config

	mu      sync.Mutex
	running *natsjs.Subscription
	cancel  context.CancelFunc
	done    chan struct{}
}

// NewConsumer returns a consumer of cfg.Stream applying events to db. Run
// the inbox migrations on db first.
func NewConsumer(db *sqldb.DB, sub Subscriber, cfg Config) (*Consumer, error) {
	if cfg.Name == "" || cfg.Stream == "" {
		return nil, errors.New("inbox: Config needs Name and Stream")
	}
	if len(cfg.Handlers) == 0 {
		return nil, errors.New("inbox: Config.Handlers is empty")
	}
	cfg.MaxBatch = cmp.Or(cfg.MaxBatch, 256)
	cfg.Retention = cmp.Or(cfg.Retention, 7*24*time.Hour)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Consumer{db: db, sub: sub, cfg: cfg}, nil
}

// Start subscribes and applies events until ctx ends or Stop is called;
// it also prunes old processed-message records and skips timed-out gaps
// (see maintain).
func (c *Consumer) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	sub, err := c.sub.SubscribeBatch(ctx, natsjs.ConsumerSpec{
		Stream:         c.cfg.Stream,
		Durable:        c.cfg.Name,
		FilterSubjects: c.cfg.Subjects,
		MaxDeliver:     c.cfg.MaxDeliver,
		AckWait:        c.cfg.AckWait,
		Backoff:        c.cfg.Backoff,
	}, c.cfg.MaxBatch, c.HandleBatch)
	if err != nil {
		cancel()
		return fmt.Errorf("inbox: %s: %w", c.cfg.Name, err)
	}
	c.mu.Lock()
	c.running, c.cancel, c.done = sub, cancel, make(chan struct{})
	c.mu.Unlock()
	go c.maintain(ctx)
	return nil
}

// maintain prunes old processed-message records and, with a GapTimeout,
// skips the gaps that have kept events parked that long, until ctx ends.
func (c *Consumer) maintain(ctx context.Context) {
	defer close(c.done)
	t := time.NewTicker(min(c.cfg.Retention/10, time.Hour))
	defer t.Stop()
	var gaps <-chan time.Time
	if c.cfg.GapTimeout > 0 {
		g := time.NewTicker(max(c.cfg.GapTimeout/4, 10*time.Millisecond))
		defer g.Stop()
		gaps = g.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := Prune(ctx, c.db, c.cfg.Name, time.Now().Add(-c.cfg.Retention)); err != nil && ctx.Err() == nil {
				c.cfg.Logger.WarnContext(ctx, "inbox: prune", "consumer", c.cfg.Name, "error", err)
			}
		case <-gaps:
			if _, err := c.SkipStaleGaps(ctx, time.Now().Add(-c.cfg.GapTimeout)); err != nil && ctx.Err() == nil {
				c.cfg.Logger.WarnContext(ctx, "inbox: skip gaps", "consumer", c.cfg.Name, "error", err)
			}
		}
	}
}

// SkipGap gives up waiting for the events missing before an aggregate's
// first parked event — ones that will never come, say, because the
// producer's operator purged a dead outbox row, or the stream dropped them
// before this consumer joined. It moves the aggregate's position past the
// gap and applies the parked events that follow, with their handlers, in
// one transaction; the skipped events are lost to this consumer. It
// returns [ErrNothingParked] if the aggregate has no parked event.
func (c *Consumer) SkipGap(ctx context.Context, aggregateType, aggregateID string) (Gap, error) {
	var g Gap
	err := sqldb.RunInTx(ctx, c.db, func(tx *sql.Tx) error {
		var err error
		g, err = skipGap(ctx, tx, c.cfg.Name, aggregateType, aggregateID, c.handler)
		return err
	})
	if err != nil {
		return Gap{}, err
	}
	c.cfg.Logger.WarnContext(ctx, "inbox: skipped a gap", "consumer", g.Consumer, "aggregate_type", g.AggregateType,
		"aggregate_id", g.AggregateID, "from", g.From, "to", g.To, "applied", g.Applied)
	return g, nil
}

// SkipStaleGaps runs [Consumer.SkipGap] for every aggregate whose oldest
// parked event was parked before olderThan, and returns the gaps skipped.
func (c *Consumer) SkipStaleGaps(ctx context.Context, olderThan time.Time) ([]Gap, error) {
	stale, err := staleAggregates(ctx, c.db, c.cfg.Name, olderThan.UnixMicro())
	if err != nil {
		return nil, err
	}
	var gaps []Gap
	for _, a := range stale {
		g, err := c.SkipGap(ctx, a.typ, a.id)
		if errors.Is(err, ErrNothingParked) {
			continue // released meanwhile
		}
		if err != nil {
			return gaps, err
		}
		gaps = append(gaps, g)
	}
	return gaps, nil
}

// Stop stops consuming and waits for the batch in progress.
func (c *Consumer) Stop() error {
	c.mu.Lock()
	sub, cancel, done := c.running, c.cancel, c.done
	c.running = nil
	c.mu.Unlock()
	if sub == nil {
		return nil
	}
	err := sub.Stop()
	cancel()
	<-done
	return err
}

// HandleBatch applies a batch of deliveries and returns one result per
// delivery (see natsjs.BatchHandler). It is what Start subscribes with.
func (c *Consumer) HandleBatch(ctx context.Context, ds []*natsjs.Delivery) []error {
	results := make([]error, len(ds))
	type item struct {
		i  int
		ev sysops.Event
		fn ApplyFunc
	}
	var items []item
	for i, d := range ds {
		ev, err := natsjs.ParseEvent(d.Message)
		if err != nil {
			results[i] = Permanent(fmt.Errorf("malformed envelope: %w", err))
			continue
		}
		fn, err := c.handler(ev)
		if err != nil {
			results[i] = err
			continue
		}
		items = append(items, item{i: i, ev: ev, fn: fn})
	}
	if len(items) == 0 {
		return results
	}
	// Optimistically, the whole batch in one transaction.
	evs := make([]sysops.Event, len(items))
	for i, it := range items {
		evs[i] = it.ev
	}
	err := c.untilReachable(ctx, len(items), func() error {
		return sqldb.RunInTx(ctx, c.db, func(tx *sql.Tx) error {
			claimed, err := claimRuns(ctx, tx, c.cfg.Name, evs)
			if err != nil {
				return err
			}
			for _, it := range items {
				if sequenced(it.ev) && claimed[aggregateOf(it.ev)] {
					if err := it.fn(ctx, tx, it.ev); err != nil {
						return err
					}
					continue
				}
				if _, err := apply(ctx, tx, c.cfg.Name, it.ev, c.handler); err != nil {
					return err
				}
			}
			return nil
		})
	})
	if err == nil {
		return results
	}
	if len(items) == 1 || ctx.Err() != nil {
		for _, it := range items {
			results[it.i] = settled(err)
		}
		return results
	}
	// Something failed: one transaction per message, so only it fails.
	for _, it := range items {
		results[it.i] = c.untilReachable(ctx, 1, func() error {
			_, err := process(ctx, c.db, c.cfg.Name, it.ev, c.handler)
			return err
		})
	}
	return results
}

// untilReachable runs fn, and again each time it fails while the database
// does not answer, or answers that it cannot take the work just now
// ([sqldb.IsUnavailable]: read-only after a failover, out of disk): an
// outage of the consumer's own database is not the messages' fault, and
// failing their deliveries would dead-letter them once it outlasted the
// redelivery budget (about a second and a half by default). Meanwhile the
// broker consumer keeps the held messages (n of them, for the log) from
// being delivered again. It returns fn's error once the database answers
// and does not refuse the work for a state of its own, or ctx's.
func (c *Consumer) untilReachable(ctx context.Context, n int, fn func() error) error {
	held := false
	wait := 100 * time.Millisecond
	for {
		err := fn()
		if err == nil || ctx.Err() != nil || errors.Is(err, context.Canceled) || natsjs.IsPermanent(err) {
			if err == nil && held {
				c.cfg.Logger.InfoContext(ctx, "inbox: database takes the work again", "consumer", c.cfg.Name)
			}
			return err
		}
		perr := c.ping(ctx)
		if perr == nil && !sqldb.IsUnavailable(err) {
			return err
		}
		if !held {
			reason := err
			if perr != nil {
				reason = perr
			}
			c.cfg.Logger.WarnContext(ctx, "inbox: database unavailable; holding messages until it takes them",
				"consumer", c.cfg.Name, "messages", n, "error", reason)
			held = true
		}
		// Wait for it to answer (a ping is cheap), then for the work
		// itself to go through: a database that answers may still refuse
		// writes.
		for {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
			wait = min(2*wait, 5*time.Second)
			if perr == nil {
				break
			}
			if perr = c.ping(ctx); perr == nil {
				break
			}
		}
	}
}

// ping asks the consumer's database whether it answers, within 5 s.
func (c *Consumer) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return c.db.PingContext(ctx)
}

// handler returns the handler of ev's type.
func (c *Consumer) handler(ev sysops.Event) (ApplyFunc, error) {
	if fn, ok := c.cfg.Handlers[ev.Type]; ok {
		return guarded(fn), nil
	}
	return nil, Permanent(fmt.Errorf("unknown event type %q: consumer %s handles %s", ev.Type, c.cfg.Name, c.handled()))
}

func (c *Consumer) handled() string {
	var types []string
	for t := range c.cfg.Handlers {
		types = append(types, t)
	}
	slices.Sort(types)
	return strings.Join(types, ", ")
}
