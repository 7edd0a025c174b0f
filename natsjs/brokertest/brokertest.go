// Package brokertest is the conformance suite every broker implementation
// must pass: the behaviour the outbox relay, the inbox and the services
// rely on, checked against a real server. Run it with [Run] from the
// implementation's tests.
//
// Each test works in a namespace of its own (random stream names and
// subjects, deleted at the end), so the suite can run against a shared
// external server at the same time as other test runs.
package brokertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sysops-squad/sysops/natsjs"
)

// Broker is what the suite needs of an implementation.
type Broker interface {
	EnsureStream(ctx context.Context, spec natsjs.StreamSpec) error
	EnsureDeadLetterStream(ctx context.Context) error
	DeleteStream(ctx context.Context, name string) error
	StreamMessages(ctx context.Context, name string) (uint64, error)
	Publish(ctx context.Context, m natsjs.Message) (natsjs.PubAck, error)
	PublishBatch(ctx context.Context, msgs []natsjs.Message) ([]natsjs.PubAck, []error)
	Subscribe(ctx context.Context, spec natsjs.ConsumerSpec, h natsjs.Handler) (*natsjs.Subscription, error)
	SubscribeBatch(ctx context.Context, spec natsjs.ConsumerSpec, maxBatch int, h natsjs.BatchHandler) (*natsjs.Subscription, error)
	DeadLetters(ctx context.Context, after uint64, limit int) ([]natsjs.DeadLetter, error)
	Redrive(ctx context.Context, seq uint64) (natsjs.DeadLetter, error)
	DiscardDeadLetter(ctx context.Context, seq uint64) error
	Close()
}

// NewBroker connects a new broker with cfg; the implementation fills in
// where to connect. Each call must return an independent connection.
type NewBroker func(t *testing.T, cfg natsjs.Config) Broker

// waitTimeout bounds every wait in the suite; nothing waits on a sleep.
const waitTimeout = 20 * time.Second

// Run runs the conformance suite.
func Run(t *testing.T, newBroker NewBroker) {
	tests := []struct {
		name string
		fn   func(t *testing.T, e *env)
	}{
		{"RoundTrip", testRoundTrip},
		{"OrderPerSubject", testOrderPerSubject},
		{"RedeliveryAfterConsumerDies", testRedeliveryAfterConsumerDies},
		{"DuplicateIDStoredOnce", testDuplicateIDStoredOnce},
		{"BatchPublish", testBatchPublish},
		{"PoisonMessageToDLQ", testPoisonMessageToDLQ},
		{"PermanentErrorToDLQAtOnce", testPermanentErrorToDLQAtOnce},
		{"DurableResumesAfterRestart", testDurableResumesAfterRestart},
		{"IdempotentStreamSetup", testIdempotentStreamSetup},
		{"BatchesSettlePerMessage", testBatchesSettlePerMessage},
		{"SlowConsumerKeepsItsBacklog", testSlowConsumerKeepsItsBacklog},
		{"RedriveAndDiscard", testRedriveAndDiscard},
		{"LostStreamIsMadeAgain", testLostStreamIsMadeAgain},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, newEnv(t, newBroker))
		})
	}
}

// env is one test's namespace: a stream, its subjects and a dead-letter
// stream that no other test uses.
type env struct {
	ctx     context.Context
	ns      string // lower-case random prefix
	stream  string
	cfg     natsjs.Config
	connect func() Broker
	broker  Broker
}

func newEnv(t *testing.T, newBroker NewBroker) *env {
	t.Helper()
	ns := "bt" + randomName()
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
	t.Cleanup(cancel)
	e := &env{
		ctx:    ctx,
		ns:     ns,
		stream: strings.ToUpper(ns) + "_ORDERS",
		cfg: natsjs.Config{
			Name:             "brokertest-" + ns,
			DeadLetterStream: strings.ToUpper(ns) + "_DLQ",
			DeadLetterPrefix: ns + "_dlq",
		},
	}
	e.connect = func() Broker {
		br := newBroker(t, e.cfg)
		t.Cleanup(br.Close)
		return br
	}
	e.broker = e.connect()
	if err := e.broker.EnsureStream(ctx, natsjs.StreamSpec{Name: e.stream, Subjects: []string{ns + ".orders.>"}}); err != nil {
		t.Fatal(err)
	}
	if err := e.broker.EnsureDeadLetterStream(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, s := range []string{e.stream, e.cfg.DeadLetterStream} {
			if err := e.broker.DeleteStream(ctx, s); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	return e
}

func (e *env) subject(s string) string { return e.ns + ".orders." + s }

func (e *env) publish(t *testing.T, id, subject, data string) natsjs.PubAck {
	t.Helper()
	ack, err := e.broker.Publish(e.ctx, natsjs.Message{ID: id, Subject: e.subject(subject), Data: []byte(data)})
	if err != nil {
		t.Fatalf("publish %s: %v", id, err)
	}
	return ack
}

// publishMany publishes n messages m-0 ... m-(n-1) to subject in one batch.
func (e *env) publishMany(t *testing.T, subject string, n int) {
	t.Helper()
	msgs := make([]natsjs.Message, n)
	for i := range msgs {
		msgs[i] = natsjs.Message{ID: fmt.Sprint("m-", i), Subject: e.subject(subject), Data: []byte(fmt.Sprint(i))}
	}
	if _, errs := e.broker.PublishBatch(e.ctx, msgs); errors.Join(errs...) != nil {
		t.Fatal(errors.Join(errs...))
	}
}

// spec returns a consumer spec with fast retries, for tests.
func (e *env) spec(durable string) natsjs.ConsumerSpec {
	return natsjs.ConsumerSpec{
		Stream:     e.stream,
		Durable:    durable,
		MaxDeliver: 3,
		AckWait:    2 * time.Second,
		Backoff:    func(int) time.Duration { return 20 * time.Millisecond },
	}
}

// recorder collects deliveries for a test to wait on.
type recorder struct {
	mu   sync.Mutex
	got  []natsjs.Delivery
	more chan struct{}
}

func newRecorder() *recorder { return &recorder{more: make(chan struct{}, 1)} }

func (r *recorder) add(d *natsjs.Delivery) {
	r.mu.Lock()
	r.got = append(r.got, *d)
	r.mu.Unlock()
	select {
	case r.more <- struct{}{}:
	default:
	}
}

// wait returns the deliveries once cond holds for them, or fails the test
// after waitTimeout.
func (r *recorder) wait(t *testing.T, what string, cond func([]natsjs.Delivery) bool) []natsjs.Delivery {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		got := slices.Clone(r.got)
		r.mu.Unlock()
		if cond(got) {
			return got
		}
		select {
		case <-r.more:
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s; have %d deliveries", waitTimeout, what, len(got))
		}
	}
}

func atLeast(n int) func([]natsjs.Delivery) bool {
	return func(d []natsjs.Delivery) bool { return len(d) >= n }
}

func (e *env) subscribe(t *testing.T, b Broker, spec natsjs.ConsumerSpec, h natsjs.Handler) *natsjs.Subscription {
	t.Helper()
	sub, err := b.Subscribe(e.ctx, spec, h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Stop() })
	return sub
}

func testRoundTrip(t *testing.T, e *env) {
	h := nats.Header{}
	h.Set("ce-type", "sysops.test.created.v1")
	h.Add("X-Multi", "a")
	h.Add("X-Multi", "b")
	ack, err := e.broker.Publish(e.ctx, natsjs.Message{ID: "m-1", Subject: e.subject("created"), Header: h, Data: []byte(`{"n":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	if ack.Stream != e.stream || ack.Sequence != 1 || ack.Duplicate {
		t.Errorf("ack = %+v, want stream %s sequence 1, not duplicate", ack, e.stream)
	}
	rec := newRecorder()
	e.subscribe(t, e.broker, e.spec("rt"), func(_ context.Context, d *natsjs.Delivery) error {
		rec.add(d)
		return nil
	})
	got := rec.wait(t, "one delivery", atLeast(1))[0]
	if got.ID != "m-1" || got.Subject != e.subject("created") || string(got.Data) != `{"n":1}` {
		t.Errorf("delivery = id %q subject %q data %s", got.ID, got.Subject, got.Data)
	}
	if got.Header.Get("ce-type") != "sysops.test.created.v1" || !slices.Equal(got.Header.Values("X-Multi"), []string{"a", "b"}) {
		t.Errorf("headers = %v", got.Header)
	}
	if got.Stream != e.stream || got.Sequence != 1 || got.NumDelivered != 1 || got.Stored.IsZero() {
		t.Errorf("metadata = stream %s seq %d delivered %d stored %v", got.Stream, got.Sequence, got.NumDelivered, got.Stored)
	}
}

func testOrderPerSubject(t *testing.T, e *env) {
	const n = 300
	subjects := []string{"a", "b", "c"}
	msgs := make([]natsjs.Message, 0, n)
	for i := range n {
		s := subjects[i%len(subjects)]
		msgs = append(msgs, natsjs.Message{ID: fmt.Sprintf("%s-%d", s, i), Subject: e.subject(s), Data: []byte(fmt.Sprint(i))})
	}
	// Half one by one, half in a batch: both must keep the order.
	for _, m := range msgs[:n/2] {
		if _, err := e.broker.Publish(e.ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	_, errs := e.broker.PublishBatch(e.ctx, msgs[n/2:])
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	e.subscribe(t, e.broker, e.spec("order"), func(_ context.Context, d *natsjs.Delivery) error {
		rec.add(d)
		return nil
	})
	got := rec.wait(t, fmt.Sprintf("%d deliveries", n), atLeast(n))
	last := map[string]int{}
	for _, d := range got {
		var i int
		fmt.Sscan(string(d.Data), &i)
		if prev, ok := last[d.Subject]; ok && i <= prev {
			t.Fatalf("on %s message %d arrived after %d", d.Subject, i, prev)
		}
		last[d.Subject] = i
	}
}

func testRedeliveryAfterConsumerDies(t *testing.T, e *env) {
	e.publish(t, "m-1", "created", "x")
	// The first consumer takes the message and dies holding it: its
	// connection closes before it acks.
	doomed := e.connect()
	holding := make(chan struct{})
	release := make(chan struct{})
	spec := e.spec("survivor")
	_, err := doomed.Subscribe(e.ctx, spec, func(ctx context.Context, d *natsjs.Delivery) error {
		close(holding)
		<-release
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-holding:
	case <-time.After(waitTimeout):
		t.Fatal("first consumer never received the message")
	}
	doomed.Close()
	defer close(release)

	rec := newRecorder()
	e.subscribe(t, e.broker, spec, func(_ context.Context, d *natsjs.Delivery) error {
		rec.add(d)
		return nil
	})
	got := rec.wait(t, "the redelivery", atLeast(1))[0]
	if got.ID != "m-1" || got.NumDelivered < 2 {
		t.Errorf("redelivered %q with NumDelivered %d, want m-1 delivered at least twice", got.ID, got.NumDelivered)
	}
}

func testDuplicateIDStoredOnce(t *testing.T, e *env) {
	first := e.publish(t, "same-id", "created", "first")
	again := e.publish(t, "same-id", "created", "second")
	if first.Duplicate || !again.Duplicate {
		t.Errorf("duplicate flags = %v, %v; want false, true", first.Duplicate, again.Duplicate)
	}
	_, errs := e.broker.PublishBatch(e.ctx, []natsjs.Message{
		{ID: "same-id", Subject: e.subject("created"), Data: []byte("third")},
		{ID: "other-id", Subject: e.subject("created"), Data: []byte("other")},
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	n, err := e.broker.StreamMessages(e.ctx, e.stream)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("stream holds %d messages, want 2", n)
	}
	if _, err := e.broker.Publish(e.ctx, natsjs.Message{Subject: e.subject("created")}); !errors.Is(err, natsjs.ErrNoID) {
		t.Errorf("publish without id: err = %v, want ErrNoID", err)
	}
}

func testBatchPublish(t *testing.T, e *env) {
	msgs := make([]natsjs.Message, 1000)
	for i := range msgs {
		msgs[i] = natsjs.Message{ID: fmt.Sprint("b-", i), Subject: e.subject("batch"), Data: []byte("x")}
	}
	msgs[500].ID = "" // one bad message fails alone
	acks, errs := e.broker.PublishBatch(e.ctx, msgs)
	for i, err := range errs {
		if (i == 500) != (err != nil) {
			t.Fatalf("message %d: err = %v", i, err)
		}
	}
	if !errors.Is(errs[500], natsjs.ErrNoID) {
		t.Errorf("bad message error = %v, want ErrNoID", errs[500])
	}
	if acks[999].Sequence != 999 {
		t.Errorf("last ack sequence = %d, want 999", acks[999].Sequence)
	}
	if n, err := e.broker.StreamMessages(e.ctx, e.stream); err != nil || n != 999 {
		t.Errorf("stream holds %d messages (%v), want 999", n, err)
	}
}

func testPoisonMessageToDLQ(t *testing.T, e *env) {
	h := nats.Header{}
	h.Set("ce-type", "sysops.test.poison.v1")
	if _, err := e.broker.Publish(e.ctx, natsjs.Message{ID: "poison", Subject: e.subject("created"), Header: h, Data: []byte("bad")}); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		e.publish(t, fmt.Sprint("good-", i), "created", "good")
	}
	rec := newRecorder()
	var mu sync.Mutex
	poisonTries := 0
	e.subscribe(t, e.broker, e.spec("poison"), func(_ context.Context, d *natsjs.Delivery) error {
		if d.ID == "poison" {
			mu.Lock()
			poisonTries++
			mu.Unlock()
			return errors.New("cannot parse order")
		}
		rec.add(d)
		return nil
	})
	rec.wait(t, "the 5 good messages", atLeast(5))
	dl := waitDeadLetters(t, e, 1)[0]
	if dl.OriginalID != "poison" || dl.Subject != e.subject("created") || dl.Stream != e.stream || dl.Sequence != 1 {
		t.Errorf("dead letter = id %q subject %q stream %q seq %d", dl.OriginalID, dl.Subject, dl.Stream, dl.Sequence)
	}
	if dl.Deliveries != 3 || dl.Consumer != "poison" {
		t.Errorf("dead letter deliveries %d consumer %q, want 3, poison", dl.Deliveries, dl.Consumer)
	}
	if !strings.Contains(dl.Reason, "cannot parse order") || !strings.Contains(dl.Reason, "3 deliveries") {
		t.Errorf("reason %q should name the last error and the delivery count", dl.Reason)
	}
	if string(dl.Data) != "bad" || dl.Header.Get("ce-type") != "sysops.test.poison.v1" {
		t.Errorf("dead letter lost the original data or headers: %s %v", dl.Data, dl.Header)
	}
	if dl.Time.IsZero() {
		t.Error("dead letter has no time")
	}
	mu.Lock()
	defer mu.Unlock()
	if poisonTries != 3 {
		t.Errorf("handler saw the poison message %d times, want 3", poisonTries)
	}
}

func testPermanentErrorToDLQAtOnce(t *testing.T, e *env) {
	e.publish(t, "malformed", "created", "{not json")
	tries := make(chan struct{}, 10)
	e.subscribe(t, e.broker, e.spec("perm"), func(_ context.Context, d *natsjs.Delivery) error {
		tries <- struct{}{}
		return natsjs.Permanent(errors.New("malformed envelope: bad JSON"))
	})
	dl := waitDeadLetters(t, e, 1)[0]
	if dl.Deliveries != 1 || !strings.Contains(dl.Reason, "malformed envelope") {
		t.Errorf("dead letter after %d deliveries with reason %q; want 1 and the handler's reason", dl.Deliveries, dl.Reason)
	}
	if len(tries) != 1 {
		t.Errorf("handler ran %d times, want 1", len(tries))
	}
}

// testRedriveAndDiscard: a dead letter sent back to its subject, once
// its cause is fixed, is delivered to the consumer again, with its
// headers and data, and leaves the dead-letter stream; one discarded is
// gone for good; a dead letter that is not there is an error naming it.
func testRedriveAndDiscard(t *testing.T, e *env) {
	h := nats.Header{}
	h.Set("ce-type", "sysops.test.refused.v1")
	if _, err := e.broker.Publish(e.ctx, natsjs.Message{ID: "refused", Subject: e.subject("created"), Header: h, Data: []byte("v1")}); err != nil {
		t.Fatal(err)
	}
	e.publish(t, "dropped", "created", "x")
	var mu sync.Mutex
	fixed := false
	rec := newRecorder()
	e.subscribe(t, e.broker, e.spec("redrive"), func(_ context.Context, d *natsjs.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		if !fixed {
			return natsjs.Permanent(errors.New("handler cannot take it yet"))
		}
		rec.add(d)
		return nil
	})
	dls := waitDeadLetters(t, e, 2)
	seqs := map[string]uint64{}
	for _, dl := range dls {
		seqs[dl.OriginalID] = dl.DLQSequence
	}
	mu.Lock()
	fixed = true
	mu.Unlock()
	dl, err := e.broker.Redrive(e.ctx, seqs["refused"])
	if err != nil {
		t.Fatal(err)
	}
	if dl.OriginalID != "refused" {
		t.Errorf("redrove %q, want refused", dl.OriginalID)
	}
	got := rec.wait(t, "the redriven message", atLeast(1))[0]
	if got.Subject != e.subject("created") || string(got.Data) != "v1" || got.Header.Get("ce-type") != "sysops.test.refused.v1" {
		t.Errorf("redriven message = %s %q %v, want the original subject, data and headers", got.Subject, got.Data, got.Header)
	}
	if got.Header.Get(natsjs.DlqReason) != "" {
		t.Errorf("redriven message still carries the dead-letter headers: %v", got.Header)
	}
	if err := e.broker.DiscardDeadLetter(e.ctx, seqs["dropped"]); err != nil {
		t.Fatal(err)
	}
	if left, err := e.broker.DeadLetters(e.ctx, 0, 10); err != nil || len(left) != 0 {
		t.Errorf("dead letters left: %d (%v), want none after a redrive and a discard", len(left), err)
	}
	if _, err := e.broker.Redrive(e.ctx, seqs["refused"]); err == nil || !strings.Contains(err.Error(), fmt.Sprint(seqs["refused"])) {
		t.Errorf("redrive of a dead letter already redriven: %v, want an error naming it", err)
	}
	if err := e.broker.DiscardDeadLetter(e.ctx, seqs["dropped"]); err == nil {
		t.Error("discarding a dead letter twice succeeded")
	}
}

func waitDeadLetters(t *testing.T, e *env, n int) []natsjs.DeadLetter {
	t.Helper()
	return WaitDeadLetters(t, e.broker, n)
}

func testDurableResumesAfterRestart(t *testing.T, e *env) {
	for i := range 5 {
		e.publish(t, fmt.Sprint("before-", i), "created", "x")
	}
	rec := newRecorder()
	handler := func(_ context.Context, d *natsjs.Delivery) error {
		rec.add(d)
		return nil
	}
	first := e.connect()
	sub, err := first.Subscribe(e.ctx, e.spec("resume"), handler)
	if err != nil {
		t.Fatal(err)
	}
	rec.wait(t, "the first 5", atLeast(5))
	if err := sub.Stop(); err != nil {
		t.Fatal(err)
	}
	first.Close()

	for i := range 5 {
		e.publish(t, fmt.Sprint("after-", i), "created", "x")
	}
	e.subscribe(t, e.connect(), e.spec("resume"), handler)
	got := rec.wait(t, "the next 5", atLeast(10))
	var ids []string
	for _, d := range got {
		ids = append(ids, d.ID)
	}
	// The later five come in any order: on a cluster, a pull request the
	// stopped subscriber left with the consumer's leader can take some of
	// them before the leader learns it is gone, and they come back after
	// AckWait, behind the others.
	slices.Sort(ids[5:])
	want := []string{"before-0", "before-1", "before-2", "before-3", "before-4", "after-0", "after-1", "after-2", "after-3", "after-4"}
	if !slices.Equal(ids, want) {
		t.Errorf("deliveries = %v, want %v (each once, resuming after the restart)", ids, want)
	}
}

func testIdempotentStreamSetup(t *testing.T, e *env) {
	spec := natsjs.StreamSpec{Name: e.stream, Subjects: []string{e.ns + ".orders.>"}}
	for range 3 {
		if err := e.broker.EnsureStream(e.ctx, spec); err != nil {
			t.Fatalf("EnsureStream again: %v", err)
		}
		if err := e.broker.EnsureDeadLetterStream(e.ctx); err != nil {
			t.Fatalf("EnsureDeadLetterStream again: %v", err)
		}
	}
	e.publish(t, "kept", "created", "x")
	if err := e.broker.EnsureStream(e.ctx, spec); err != nil {
		t.Fatal(err)
	}
	if n, err := e.broker.StreamMessages(e.ctx, e.stream); err != nil || n != 1 {
		t.Errorf("after re-ensuring, stream holds %d (%v), want the 1 message kept", n, err)
	}
	if err := e.broker.EnsureStream(e.ctx, natsjs.StreamSpec{Name: "bad name", Subjects: []string{"x"}}); err == nil {
		t.Error("EnsureStream accepted a name with a space")
	}
}

func testBatchesSettlePerMessage(t *testing.T, e *env) {
	const n = 200
	e.publishMany(t, "batch", n)
	rec := newRecorder()
	var mu sync.Mutex
	largest := 0
	sub, err := e.broker.SubscribeBatch(e.ctx, e.spec("batch"), 32, func(_ context.Context, ds []*natsjs.Delivery) []error {
		mu.Lock()
		largest = max(largest, len(ds))
		mu.Unlock()
		errs := make([]error, len(ds))
		for i, d := range ds {
			if d.ID == "m-7" {
				errs[i] = natsjs.Permanent(errors.New("rejected m-7"))
				continue
			}
			rec.add(d)
		}
		return errs
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Stop() })
	got := rec.wait(t, fmt.Sprintf("%d deliveries", n-1), atLeast(n-1))
	dls := waitDeadLetters(t, e, 1)
	if dls[0].OriginalID != "m-7" || !strings.Contains(dls[0].Reason, "rejected m-7") {
		t.Errorf("dead letter = %q (%s), want m-7", dls[0].OriginalID, dls[0].Reason)
	}
	seen := map[string]bool{}
	for _, d := range got {
		if seen[d.ID] {
			t.Errorf("%s delivered twice: an acked message of a batch came back", d.ID)
		}
		seen[d.ID] = true
	}
	mu.Lock()
	defer mu.Unlock()
	if largest < 2 || largest > 32 {
		t.Errorf("largest batch = %d, want between 2 and 32 with %d messages waiting", largest, n)
	}
}

// testSlowConsumerKeepsItsBacklog: a live consumer whose backlog takes
// several AckWaits to work through keeps every message it was sent: none
// comes back while it waits its turn, so none is handled twice or
// dead-lettered for deliveries it never failed.
func testSlowConsumerKeepsItsBacklog(t *testing.T, e *env) {
	const n = 40
	e.publishMany(t, "slow", n)
	spec := e.spec("slow")
	spec.AckWait = time.Second
	spec.MaxDeliver = 1
	rec := newRecorder()
	// 40 messages at 100 ms each: the last waits about four AckWaits.
	e.subscribe(t, e.broker, spec, func(ctx context.Context, d *natsjs.Delivery) error {
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
		rec.add(d)
		return nil
	})
	got := rec.wait(t, fmt.Sprintf("%d deliveries", n), atLeast(n))
	seen := map[string]int{}
	for _, d := range got {
		seen[d.ID]++
		if d.NumDelivered != 1 {
			t.Errorf("%s delivered %d times to a live consumer", d.ID, d.NumDelivered)
		}
	}
	for id, k := range seen {
		if k > 1 {
			t.Errorf("%s handled %d times", id, k)
		}
	}
	if len(seen) != n {
		t.Errorf("handled %d distinct messages, want %d", len(seen), n)
	}
	if dls, err := e.broker.DeadLetters(e.ctx, 0, 10); err != nil || len(dls) != 0 {
		t.Errorf("dead letters = %d (%v), want none", len(dls), err)
	}
}

// RunServer starts an embedded JetStream server for the test, with its
// store in the test's temporary directory, shut down when the test ends.
func RunServer(tb testing.TB) *natsjs.Server {
	tb.Helper()
	return RunServerWith(tb, natsjs.ServerConfig{})
}

// RunServerWith is RunServer with cfg (its store in the test's temporary
// directory unless cfg names one): a store limit, say.
func RunServerWith(tb testing.TB, cfg natsjs.ServerConfig) *natsjs.Server {
	tb.Helper()
	if cfg.StoreDir == "" {
		cfg.StoreDir = tb.TempDir()
	}
	s, err := natsjs.RunServer(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Shutdown)
	return s
}

// Restartable is an embedded server that a test stops and starts again
// on the same address and store, as a broker that goes away and comes
// back. Server is the one running (or last run).
type Restartable struct {
	*natsjs.Server
	tb   testing.TB
	dir  string
	port int
}

// RunRestartable starts an embedded server for Stop and Start; the one
// running when the test ends is shut down.
func RunRestartable(tb testing.TB) *Restartable {
	tb.Helper()
	r := &Restartable{tb: tb, dir: tb.TempDir()}
	r.Start()
	_, port, err := net.SplitHostPort(strings.TrimPrefix(r.ClientURL(), "nats://"))
	if err != nil {
		tb.Fatal(err)
	}
	if r.port, err = strconv.Atoi(port); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.Server.Shutdown() })
	return r
}

// Stop shuts the server down.
func (r *Restartable) Stop() { r.Server.Shutdown() }

// Start starts the server, again on its first address and store.
func (r *Restartable) Start() {
	r.tb.Helper()
	s, err := natsjs.RunServer(natsjs.ServerConfig{StoreDir: r.dir, Port: r.port})
	if err != nil {
		r.tb.Fatal(err)
	}
	r.Server = s
}

// Wipe empties the store of the stopped server, as a broker that comes
// back without its data (a container restarted without its volume): the
// next Start has no stream and no consumer.
func (r *Restartable) Wipe() {
	r.tb.Helper()
	entries, err := os.ReadDir(r.dir)
	if err != nil {
		r.tb.Fatal(err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(r.dir, e.Name())); err != nil {
			r.tb.Fatal(err)
		}
	}
}

// testLostStreamIsMadeAgain: a stream the broker ensured, deleted behind
// its back (by another connection: an operator, a server that lost its
// store), is made again by the first publish that finds it gone; a batch
// that finds it gone fails, and its next try goes through.
func testLostStreamIsMadeAgain(t *testing.T, e *env) {
	other := e.connect()
	drop := func() {
		t.Helper()
		if err := other.DeleteStream(e.ctx, e.stream); err != nil {
			t.Fatal(err)
		}
	}
	drop()
	if _, err := e.broker.Publish(e.ctx, natsjs.Message{ID: "after-loss", Subject: e.subject("a"), Data: []byte("x")}); err != nil {
		t.Fatalf("the first publish after the stream was deleted: %v", err)
	}
	if n, err := e.broker.StreamMessages(e.ctx, e.stream); err != nil || n != 1 {
		t.Errorf("the stream made again holds %d messages (%v), want 1", n, err)
	}
	drop()
	batch := []natsjs.Message{{ID: "b1", Subject: e.subject("a"), Data: []byte("x")}, {ID: "b2", Subject: e.subject("a"), Data: []byte("x")}}
	_, _ = e.broker.PublishBatch(e.ctx, batch) // finds it gone, makes it again
	if _, errs := e.broker.PublishBatch(e.ctx, batch); errors.Join(errs...) != nil {
		t.Fatalf("the batch sent again: %v", errors.Join(errs...))
	}
	if n, err := e.broker.StreamMessages(e.ctx, e.stream); err != nil || n != 2 {
		t.Errorf("the stream made again holds %d messages (%v), want the batch's 2", n, err)
	}
}

// randomName returns ten random hex digits.
func randomName() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// RunCluster starts a JetStream cluster of n embedded servers on
// loopback for the test, shut down when it ends, and returns once it can
// place a stream on all n. url lists every node's client URL.
func RunCluster(tb testing.TB, n int) (nodes []*natsjs.Server, url string) {
	tb.Helper()
	// Every port is chosen before any node starts, clients' too: a node
	// left to pick its own could take a route port of a node not started
	// yet.
	free := make([]int, 2*n)
	var held []net.Listener // all held at once, so the ports differ
	for i := range free {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		held = append(held, l)
		free[i] = l.Addr().(*net.TCPAddr).Port
	}
	for _, l := range held {
		l.Close()
	}
	ports, clientPorts := free[:n], free[n:]
	routes := make([]string, n)
	for i := range n {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", ports[i])
	}
	// Names of its own: clusters of earlier tests may still be shutting
	// down in this process.
	cluster := "sysops-" + randomName()
	var urls []string
	for i := range n {
		s, err := natsjs.RunServer(natsjs.ServerConfig{StoreDir: tb.TempDir(), Name: fmt.Sprintf("%s-node-%d", cluster, i), Port: clientPorts[i],
			Cluster: &natsjs.ClusterConfig{Name: cluster, Port: ports[i], Routes: routes}})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(s.Shutdown)
		nodes = append(nodes, s)
		urls = append(urls, s.ClientURL())
	}
	url = strings.Join(urls, ",")
	// The nodes elect a leader for the cluster's metadata before JetStream
	// answers and a stream can be placed.
	probe := natsjs.StreamSpec{Name: "CLUSTER_READY_" + randomName(), Subjects: []string{"cluster.ready." + randomName()}}
	ready := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		b, err := natsjs.Connect(ctx, natsjs.Config{URL: url, Replicas: n, ConnectTimeout: 2 * time.Second})
		if err != nil {
			return err
		}
		defer b.Close()
		if err := b.EnsureStream(ctx, probe); err != nil {
			return err
		}
		return b.DeleteStream(ctx, probe.Name)
	}
	for deadline := time.Now().Add(waitTimeout); ; time.Sleep(100 * time.Millisecond) {
		err := ready()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("cluster of %d not ready after %s: %v", n, waitTimeout, err)
		}
	}
	return nodes, url
}

// Connect connects a broker to srv for the test, closed when it ends, with
// the dead-letter stream in place.
func Connect(tb testing.TB, srv *natsjs.Server) *natsjs.Broker {
	tb.Helper()
	b, err := natsjs.Connect(context.Background(), natsjs.Config{URL: srv.ClientURL()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(b.Close)
	if err := b.EnsureDeadLetterStream(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return b
}

// WaitDeadLetters polls b's dead-letter stream until it holds at least n
// dead letters, and fails the test after 20 s. (The stream has no push
// signal to wait on here.)
func WaitDeadLetters(tb testing.TB, b interface {
	DeadLetters(ctx context.Context, after uint64, limit int) ([]natsjs.DeadLetter, error)
}, n int) []natsjs.DeadLetter {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		dls, err := b.DeadLetters(context.Background(), 0, 100)
		if err != nil {
			tb.Fatal(err)
		}
		if len(dls) >= n {
			return dls
		}
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %d dead letters; have %d", n, len(dls))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// JetStream connects a plain JetStream client to url, for a test to look
// at or act on the server behind the broker's back; the connection is
// closed when the test ends.
func JetStream(tb testing.TB, url string) jetstream.JetStream {
	tb.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return js
}
