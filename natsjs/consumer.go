package natsjs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ConsumerSpec describes a durable pull consumer. The zero value of each
// optional field means its default.
type ConsumerSpec struct {
	// Stream to consume. Required.
	Stream string
	// Durable name; the consumer's position survives restarts under it.
	// Required.
	Durable string
	// FilterSubjects limits the consumer to these subjects. Empty: all.
	FilterSubjects []string
	// MaxDeliver is how many times a message is delivered before it is
	// dead-lettered. Default 5.
	MaxDeliver int
	// AckWait is how long the server waits for an ack before it delivers
	// the message again. The consumer tells the server it is still
	// working on every message it holds (in the handler or waiting its
	// turn) every AckWait/3, so only a dead consumer lets it
	// expire, and AckWait is how long the messages a crashed consumer
	// held wait before they go to another. Default 10 s.
	AckWait time.Duration
	// Backoff gives the delay before delivery n+1 after the handler failed
	// delivery n. Default: 100 ms doubling per delivery up to 30 s, with
	// ±20% jitter.
	Backoff func(delivery int) time.Duration
	// MaxAckPending caps messages delivered but not yet acked. Default 256.
	MaxAckPending int
}

// Delivery is a message as a [Handler] receives it.
type Delivery struct {
	Message
	Stream string
	// Sequence is the message's sequence in its stream.
	Sequence uint64
	// NumDelivered counts deliveries of this message, from 1.
	NumDelivered int
	// Stored is when the stream stored the message.
	Stored time.Time
}

// Handler processes one delivery. Return nil to ack it, [Permanent] to
// dead-letter it at once, [RetryAfter] to choose the redelivery delay, or
// any other error to have it redelivered after the [ConsumerSpec.Backoff]
// delay. A handler must be idempotent: a message may arrive more than once.
type Handler func(ctx context.Context, d *Delivery) error

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as one that no retry can fix: the message goes to
// the dead-letter stream at once with err as the reason.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err was marked with [Permanent].
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

type retryAfterError struct {
	err   error
	delay time.Duration
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }

// RetryAfter asks for the message to be delivered again after delay
// instead of the default backoff. It still counts as a failed delivery.
func RetryAfter(err error, delay time.Duration) error {
	if err == nil {
		err = errors.New("retry requested")
	}
	return &retryAfterError{err: err, delay: delay}
}

// Dead-letter headers, added to the original headers of a dead letter.
const (
	DlqReason     = "Sysops-Dlq-Reason"
	DlqSubject    = "Sysops-Dlq-Subject"
	DlqStream     = "Sysops-Dlq-Stream"
	DlqSequence   = "Sysops-Dlq-Sequence"
	DlqConsumer   = "Sysops-Dlq-Consumer"
	DlqDeliveries = "Sysops-Dlq-Deliveries"
	DlqMessageID  = "Sysops-Dlq-Message-Id"
	DlqTime       = "Sysops-Dlq-Time"
)

// DefaultBackoff is the redelivery delay after failed delivery n: 100 ms
// doubling per delivery, capped at 30 s, with ±20% jitter.
func DefaultBackoff(delivery int) time.Duration {
	d := 100 * time.Millisecond << min(max(delivery-1, 0), 9)
	d = min(d, 30*time.Second)
	jitter := 0.8 + 0.4*rand.Float64()
	return time.Duration(float64(d) * jitter)
}

// Subscription is a running consumer. Stop it with [Subscription.Stop].
//
// It rides out what happens to the server meanwhile: a server that goes
// away and comes back (the connection reconnects and the consumer goes
// on), and a durable consumer deleted on the server, by hand or with its
// stream (it is created again, retrying with backoff while the stream is
// missing, and each loss is logged). It ends only when Stop is called,
// its ctx ends, or the broker is closed.
type Subscription struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	err    error
}

// Stop stops fetching, waits for the handler in progress to finish and
// returns the error that ended the subscription, if any other than Stop.
func (s *Subscription) Stop() error {
	s.cancel()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Done is closed when the subscription has ended: stopped, its ctx ended,
// or the broker closed.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// BatchHandler processes the deliveries that arrived together, in stream
// order, and returns one result per delivery with the meaning of a
// [Handler]'s result. It lets a consumer commit many messages' effects in
// one transaction.
type BatchHandler func(ctx context.Context, ds []*Delivery) []error

// Subscribe creates or updates the durable consumer described by spec and
// runs h on every message, one at a time, in stream order, until ctx ends
// or Stop is called. The dead-letter stream must exist
// ([Broker.EnsureDeadLetterStream]).
func (b *Broker) Subscribe(ctx context.Context, spec ConsumerSpec, h Handler) (*Subscription, error) {
	if h == nil {
		return nil, errors.New("natsjs: nil handler")
	}
	return b.SubscribeBatch(ctx, spec, 1, func(ctx context.Context, ds []*Delivery) []error {
		return []error{callHandler(ctx, h, ds[0])}
	})
}

// callHandler runs h, turning a panic into a permanent failure: one bad
// message must not crash the consumer.
func callHandler(ctx context.Context, h Handler, d *Delivery) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = Permanent(fmt.Errorf("handler panicked: %v", p))
		}
	}()
	return h(ctx, d)
}

// SubscribeBatch is [Broker.Subscribe] for a handler that takes up to
// maxBatch deliveries at once: whatever has arrived when the handler is
// free, so batches grow with load and a lone message waits for nothing.
func (b *Broker) SubscribeBatch(ctx context.Context, spec ConsumerSpec, maxBatch int, h BatchHandler) (*Subscription, error) {
	if spec.Stream == "" || spec.Durable == "" {
		return nil, errors.New("natsjs: ConsumerSpec needs Stream and Durable")
	}
	if h == nil {
		return nil, errors.New("natsjs: nil handler")
	}
	maxBatch = max(maxBatch, 1)
	spec.MaxDeliver = cmp.Or(spec.MaxDeliver, 5)
	spec.AckWait = cmp.Or(spec.AckWait, 10*time.Second)
	spec.MaxAckPending = cmp.Or(spec.MaxAckPending, max(256, 2*maxBatch))
	if spec.Backoff == nil {
		spec.Backoff = DefaultBackoff
	}
	// The server redelivers forever; the consumer counts deliveries and
	// dead-letters, so a message whose handler crashed the process on its
	// last delivery is still dead-lettered on the next one, not dropped.
	config := jetstream.ConsumerConfig{
		Durable:        spec.Durable,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        spec.AckWait,
		MaxDeliver:     -1,
		MaxAckPending:  spec.MaxAckPending,
		FilterSubjects: spec.FilterSubjects,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
	open := func(ctx context.Context) (jetstream.MessagesContext, error) {
		cons, err := b.js.CreateOrUpdateConsumer(ctx, spec.Stream, config)
		if err != nil {
			return nil, fmt.Errorf("natsjs: consumer %s on %s: %w", spec.Durable, spec.Stream, err)
		}
		iter, err := cons.Messages(jetstream.PullMaxMessages(min(spec.MaxAckPending, max(256, maxBatch))),
			jetstream.PullHeartbeat(subscriptionHeartbeat))
		if err != nil {
			return nil, fmt.Errorf("natsjs: consumer %s on %s: %w", spec.Durable, spec.Stream, err)
		}
		return iter, nil
	}
	iter, err := open(ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	sub := &Subscription{cancel: cancel, done: make(chan struct{})}
	var iterMu sync.Mutex // guards iter and stopping
	stopping := false
	// reading bounds the reader's wait once the subscription stops: a
	// drain waits for a round trip to the server, which, with the server
	// gone, would hold Stop up for the client's flush timeout (10 s).
	reading, stopReading := context.WithCancel(context.Background())
	go func() {
		<-ctx.Done()
		// Drain, not Stop: messages already on their way to this consumer
		// are received and handed back (below) instead of waiting out
		// AckWait on the server.
		iterMu.Lock()
		stopping = true
		iter.Drain()
		iterMu.Unlock()
		select {
		case <-sub.done:
		case <-time.After(drainGrace):
		}
		stopReading()
	}()
	hold := newHolding()
	go func() {
		defer hold.close()
		iterMu.Lock()
		it := iter
		iterMu.Unlock()
		for {
			msg, err := it.Next(jetstream.NextContext(reading))
			if err == nil {
				hold.add(msg)
				continue
			}
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, nats.ErrConnectionClosed) {
				// The broker was closed: the subscription ends with it.
				sub.mu.Lock()
				sub.err = fmt.Errorf("natsjs: consumer %s: %w", spec.Durable, err)
				sub.mu.Unlock()
				cancel()
				return
			}
			// The server ended the consumer (deleted by hand, or with its
			// stream): create it again and go on, rather than leave the
			// service running without consuming. The messages in hand
			// are settled as before; what the new consumer delivers again
			// the handler has seen before, as after any crash.
			b.logger.WarnContext(ctx, "natsjs: consumer lost; creating it again", "consumer", spec.Durable,
				"stream", spec.Stream, "error", err)
			it.Stop()
			if it = b.reopen(ctx, spec, open); it == nil {
				return // stopping
			}
			iterMu.Lock()
			if stopping {
				it.Stop()
				iterMu.Unlock()
				return
			}
			iter = it
			iterMu.Unlock()
		}
	}()
	go hold.keepAlive(spec.AckWait/3, sub.done)
	go func() {
		defer close(sub.done)
		for {
			batch := hold.take(maxBatch)
			if batch == nil {
				return
			}
			if ctx.Err() != nil {
				for _, m := range batch {
					_ = m.Nak()
				}
			} else {
				b.handleBatch(ctx, spec, h, batch)
			}
			hold.release(batch)
		}
	}()
	return sub, nil
}

// subscriptionHeartbeat is how often the server says an idle pull
// request is alive. Two missed end the iterator, and the subscription
// creates its consumer again: after a server comes back without its
// store, its consumers are gone and a pull request finds no one to
// answer it, which only the missing heartbeats tell (within 10 s; the
// client's default, half the request's 30 s expiry, took 30 s).
const subscriptionHeartbeat = 5 * time.Second

// drainGrace is how long a stopping subscription waits for the messages
// already on their way to it; those that have not arrived by then come
// back to the stream after AckWait.
const drainGrace = time.Second

// reopen creates a lost consumer again, trying with backoff (100 ms
// doubling up to 5 s) until it succeeds or ctx ends (nil then): the
// stream may be gone for a while, deleted and about to be created again
// — by this broker, if it ensured it ([Broker.EnsureStream]).
func (b *Broker) reopen(ctx context.Context, spec ConsumerSpec, open func(context.Context) (jetstream.MessagesContext, error)) jetstream.MessagesContext {
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		b.recreateLost(ctx)
		it, err := open(ctx)
		if err == nil {
			b.logger.InfoContext(ctx, "natsjs: consumer created again", "consumer", spec.Durable, "stream", spec.Stream)
			return it
		}
		if ctx.Err() != nil {
			return nil
		}
		b.logger.WarnContext(ctx, "natsjs: consumer lost; will try again", "consumer", spec.Durable, "stream", spec.Stream,
			"retry_in", min(2*wait, 5*time.Second), "error", err)
	}
}

// holding is what a subscription has received and not yet settled. The
// server's AckWait runs for every one of them, whether it is in the
// handler or still waiting its turn, so the subscription reports
// progress on all of them: only a dead or stuck process lets its
// messages go back to the stream, and a live consumer working through a
// backlog longer than AckWait neither handles a message twice nor
// dead-letters one for deliveries it never failed. The server's
// MaxAckPending bounds it.
type holding struct {
	mu     sync.Mutex
	queue  []jetstream.Msg // received, waiting for the handler
	held   map[jetstream.Msg]struct{}
	closed bool
	ready  chan struct{}
}

func newHolding() *holding {
	return &holding{held: map[jetstream.Msg]struct{}{}, ready: make(chan struct{}, 1)}
}

func (q *holding) add(m jetstream.Msg) {
	q.mu.Lock()
	q.queue = append(q.queue, m)
	q.held[m] = struct{}{}
	q.mu.Unlock()
	q.signal()
}

func (q *holding) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// close says nothing more will arrive; take returns what is left, then nil.
func (q *holding) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.signal()
}

// take waits for messages and returns up to n of them in arrival order:
// whatever has arrived, so batches grow with load and a lone message
// waits for nothing. It returns nil once the queue is closed and empty.
func (q *holding) take(n int) []jetstream.Msg {
	for {
		q.mu.Lock()
		if len(q.queue) > 0 {
			k := min(n, len(q.queue))
			batch := slices.Clone(q.queue[:k])
			q.queue = slices.Delete(q.queue, 0, k)
			more := len(q.queue) > 0
			q.mu.Unlock()
			if more {
				q.signal()
			}
			return batch
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return nil
		}
		<-q.ready
	}
}

// release forgets settled messages.
func (q *holding) release(batch []jetstream.Msg) {
	q.mu.Lock()
	for _, m := range batch {
		delete(q.held, m)
	}
	q.mu.Unlock()
}

// keepAlive tells the server every interval that each held message is
// still being worked on, until done is closed.
func (q *holding) keepAlive(interval time.Duration, done <-chan struct{}) {
	t := time.NewTicker(max(interval, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			q.mu.Lock()
			msgs := make([]jetstream.Msg, 0, len(q.held))
			for m := range q.held {
				msgs = append(msgs, m)
			}
			q.mu.Unlock()
			for _, m := range msgs {
				_ = m.InProgress()
			}
		}
	}
}

// handleBatch runs h on a batch and settles each message: ack, nak with
// delay, or dead-letter.
func (b *Broker) handleBatch(ctx context.Context, spec ConsumerSpec, h BatchHandler, batch []jetstream.Msg) {
	msgs := make([]jetstream.Msg, 0, len(batch))
	ds := make([]*Delivery, 0, len(batch))
	for _, msg := range batch {
		md, err := msg.Metadata()
		if err != nil {
			_ = msg.Term()
			continue
		}
		d := &Delivery{
			Message: Message{
				ID:      msg.Headers().Get(jetstream.MsgIDHeader),
				Subject: msg.Subject(),
				Header:  msg.Headers(),
				Data:    msg.Data(),
			},
			Stream:       md.Stream,
			Sequence:     md.Sequence.Stream,
			NumDelivered: int(md.NumDelivered),
			Stored:       md.Timestamp,
		}
		if d.NumDelivered > spec.MaxDeliver {
			reason := fmt.Sprintf("delivered %d times without an ack: the consumer died or timed out while handling it", d.NumDelivered-1)
			b.logSettle(ctx, spec, d, b.deadLetter(ctx, spec, msg, d, reason))
			continue
		}
		msgs = append(msgs, msg)
		ds = append(ds, d)
	}
	if len(ds) == 0 {
		return
	}
	results := runBatch(ctx, h, ds)
	for i, herr := range results {
		b.logSettle(ctx, spec, ds[i], b.settle(ctx, spec, msgs[i], ds[i], herr))
	}
}

func (b *Broker) logSettle(ctx context.Context, spec ConsumerSpec, d *Delivery, err error) {
	if err != nil {
		b.logger.WarnContext(ctx, "natsjs: settle message", "consumer", spec.Durable, "subject", d.Subject, "error", err)
	}
}

// settle acks, naks or dead-letters one message after its handler returned herr.
func (b *Broker) settle(ctx context.Context, spec ConsumerSpec, msg jetstream.Msg, d *Delivery, herr error) error {
	switch {
	case herr == nil:
		return msg.Ack()
	case IsPermanent(herr):
		return b.deadLetter(ctx, spec, msg, d, herr.Error())
	case d.NumDelivered >= spec.MaxDeliver:
		return b.deadLetter(ctx, spec, msg, d, fmt.Sprintf("failed %d deliveries; last error: %v", d.NumDelivered, herr))
	}
	delay := spec.Backoff(d.NumDelivered)
	if ra, ok := errors.AsType[*retryAfterError](herr); ok {
		delay = ra.delay
	}
	b.logger.DebugContext(ctx, "natsjs: handler failed; will redeliver", "consumer", spec.Durable, "subject", d.Subject,
		"delivery", d.NumDelivered, "delay", delay, "error", herr)
	return msg.NakWithDelay(delay)
}

// runBatch calls h. A panic fails the whole batch (transiently: the messages come back
// and a batch handler is expected to isolate the bad one); a result slice
// of the wrong length fails it too.
func runBatch(ctx context.Context, h BatchHandler, ds []*Delivery) (results []error) {
	defer func() {
		if p := recover(); p != nil {
			results = make([]error, len(ds))
			for i := range results {
				results[i] = fmt.Errorf("batch handler panicked: %v", p)
			}
		}
	}()
	results = h(ctx, ds)
	if len(results) != len(ds) {
		err := fmt.Errorf("natsjs: batch handler returned %d results for %d deliveries", len(results), len(ds))
		results = make([]error, len(ds))
		for i := range results {
			results[i] = err
		}
	}
	return results
}

func (b *Broker) deadLetter(ctx context.Context, spec ConsumerSpec, msg jetstream.Msg, d *Delivery, reason string) error {
	h := nats.Header{}
	for k, v := range msg.Headers() {
		h[k] = append([]string(nil), v...)
	}
	if id := h.Get(jetstream.MsgIDHeader); id != "" {
		h.Set(DlqMessageID, id)
	}
	h.Del(jetstream.MsgIDHeader)
	h.Set(DlqReason, oneLine(reason))
	h.Set(DlqSubject, d.Subject)
	h.Set(DlqStream, d.Stream)
	h.Set(DlqSequence, strconv.FormatUint(d.Sequence, 10))
	h.Set(DlqConsumer, spec.Durable)
	h.Set(DlqDeliveries, strconv.Itoa(d.NumDelivered))
	h.Set(DlqTime, time.Now().UTC().Format(time.RFC3339Nano))
	// One dead letter per message and consumer, even if this process dies
	// between storing it and terminating the original.
	id := fmt.Sprintf("dlq:%s:%s:%d", spec.Durable, d.Stream, d.Sequence)
	_, err := b.Publish(ctx, Message{ID: id, Subject: b.cfg.DeadLetterPrefix + "." + d.Subject, Header: h, Data: d.Data})
	if err != nil {
		// Leave the message to be redelivered; dead-lettering is retried then.
		_ = msg.NakWithDelay(spec.Backoff(d.NumDelivered))
		return fmt.Errorf("dead-letter %s: %w", d.Subject, err)
	}
	b.logger.WarnContext(ctx, "natsjs: message dead-lettered", "consumer", spec.Durable, "subject", d.Subject,
		"sequence", d.Sequence, "deliveries", d.NumDelivered, "reason", reason)
	return msg.TermWithReason(oneLine(reason))
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\r", " ")
	return strings.ReplaceAll(s, "\n", "; ")
}

// DeadLetter is a message read back from the dead-letter stream.
type DeadLetter struct {
	Message
	Reason     string
	Subject    string // the original subject
	Stream     string // the stream it came from
	Sequence   uint64 // its sequence there
	Consumer   string // the consumer that gave up on it
	Deliveries int
	OriginalID string
	Time       time.Time
	// DLQSequence is the dead letter's own sequence in the dead-letter stream.
	DLQSequence uint64
}

// DeadLetters reads up to limit dead letters, oldest first, starting after
// the dead-letter stream's sequence after (0 for the beginning).
func (b *Broker) DeadLetters(ctx context.Context, after uint64, limit int) ([]DeadLetter, error) {
	stream, err := b.js.Stream(ctx, b.cfg.DeadLetterStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil // no service has run on this broker yet: nothing is dead
	}
	if err != nil {
		return nil, fmt.Errorf("natsjs: dead letters: %w", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("natsjs: dead letters: %w", err)
	}
	var out []DeadLetter
	for seq := max(after+1, info.State.FirstSeq); seq <= info.State.LastSeq && len(out) < limit; seq++ {
		raw, err := stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("natsjs: dead letter %d: %w", seq, err)
		}
		out = append(out, deadLetterOf(raw))
	}
	return out, nil
}

func deadLetterOf(raw *jetstream.RawStreamMsg) DeadLetter {
	h := raw.Header
	dl := DeadLetter{
		Message:     Message{ID: h.Get(DlqMessageID), Subject: raw.Subject, Header: h, Data: raw.Data},
		Reason:      h.Get(DlqReason),
		Subject:     h.Get(DlqSubject),
		Stream:      h.Get(DlqStream),
		Consumer:    h.Get(DlqConsumer),
		OriginalID:  h.Get(DlqMessageID),
		DLQSequence: raw.Sequence,
	}
	dl.Sequence, _ = strconv.ParseUint(h.Get(DlqSequence), 10, 64)
	dl.Deliveries, _ = strconv.Atoi(h.Get(DlqDeliveries))
	dl.Time, _ = time.Parse(time.RFC3339Nano, h.Get(DlqTime))
	return dl
}

// ErrNoDeadLetter: the dead-letter stream has no message of that
// sequence (it was redriven or discarded, or never was).
var ErrNoDeadLetter = errors.New("natsjs: no dead letter")

// readDeadLetter reads dead letter seq (its DLQSequence); one that is not
// there is an error naming it.
func (b *Broker) readDeadLetter(ctx context.Context, seq uint64) (jetstream.Stream, DeadLetter, error) {
	stream, err := b.js.Stream(ctx, b.cfg.DeadLetterStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, DeadLetter{}, fmt.Errorf("%w %d: the broker has no dead-letter stream %s", ErrNoDeadLetter, seq, b.cfg.DeadLetterStream)
	}
	if err != nil {
		return nil, DeadLetter{}, fmt.Errorf("natsjs: dead letters: %w", err)
	}
	raw, err := stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, DeadLetter{}, fmt.Errorf("%w %d in %s (redriven or discarded already?)", ErrNoDeadLetter, seq, b.cfg.DeadLetterStream)
	}
	if err != nil {
		return nil, DeadLetter{}, fmt.Errorf("natsjs: dead letter %d: %w", seq, err)
	}
	return stream, deadLetterOf(raw), nil
}

// Redrive sends dead letter seq (its DLQSequence) back to the subject it
// came from, with its original headers and data, for the consumers to
// take again once its cause is fixed (a handler corrected, a value now
// accepted), and removes it from the dead-letter stream. It goes as a new
// message, id "redrive:<seq>:<first id>" (the first message's id, however
// often it was redriven before), so that the stream does not
// drop it as a copy of the original; a redrive repeated (say, after a
// crash between the two steps) is stored once, within the duplicate
// window. The event it carries keeps its own id, by which the inbox drops
// it in the consumers that applied it before. It returns the dead letter
// redriven.
func (b *Broker) Redrive(ctx context.Context, seq uint64) (DeadLetter, error) {
	stream, dl, err := b.readDeadLetter(ctx, seq)
	if err != nil {
		return DeadLetter{}, err
	}
	if dl.Subject == "" {
		return dl, fmt.Errorf("natsjs: dead letter %d does not say which subject it came from (no %s header)", seq, DlqSubject)
	}
	h := nats.Header{}
	for k, v := range dl.Header {
		if !strings.HasPrefix(k, "Sysops-Dlq-") && k != jetstream.MsgIDHeader {
			h[k] = append([]string(nil), v...)
		}
	}
	// Named after the first message's id, however often it was redriven.
	root := dl.OriginalID
	for strings.HasPrefix(root, "redrive:") {
		_, rest, _ := strings.Cut(strings.TrimPrefix(root, "redrive:"), ":")
		root = rest
	}
	id := fmt.Sprintf("redrive:%d:%s", seq, root)
	if _, err := b.Publish(ctx, Message{ID: id, Subject: dl.Subject, Header: h, Data: dl.Data}); err != nil {
		return dl, fmt.Errorf("natsjs: redrive dead letter %d: %w", seq, err)
	}
	if err := stream.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return dl, fmt.Errorf("natsjs: redrove dead letter %d, but could not remove it: %w", seq, err)
	}
	b.logger.InfoContext(ctx, "natsjs: dead letter redriven", "dlq_sequence", seq, "subject", dl.Subject, "id", dl.OriginalID)
	return dl, nil
}

// DiscardDeadLetter removes dead letter seq for good: someone settled it
// by hand, or decided it needs nothing.
func (b *Broker) DiscardDeadLetter(ctx context.Context, seq uint64) error {
	stream, _, err := b.readDeadLetter(ctx, seq)
	if err != nil {
		return err
	}
	if err := stream.DeleteMsg(ctx, seq); err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("%w %d in %s (redriven or discarded already?)", ErrNoDeadLetter, seq, b.cfg.DeadLetterStream)
		}
		return fmt.Errorf("natsjs: discard dead letter %d: %w", seq, err)
	}
	return nil
}
