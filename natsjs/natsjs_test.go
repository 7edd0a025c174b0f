package natsjs_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sysops-squad/sysops/internal/testenv"
	"github.com/sysops-squad/sysops/natsjs"
	"github.com/sysops-squad/sysops/natsjs/brokertest"
)

var _ brokertest.Broker = (*natsjs.Broker)(nil)

func connector(url string) brokertest.NewBroker {
	return func(t *testing.T, cfg natsjs.Config) brokertest.Broker {
		t.Helper()
		cfg.URL = url
		b, err := natsjs.Connect(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
}

func TestConformanceEmbedded(t *testing.T) {
	s := brokertest.RunServer(t)
	brokertest.Run(t, connector(s.ClientURL()))
}

func TestConformanceExternal(t *testing.T) {
	url := testenv.Require(t, "NATS_URL", "external NATS JetStream")
	brokertest.Run(t, connector(url))
}

func TestRunServerErrors(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	_, err = natsjs.RunServer(natsjs.ServerConfig{StoreDir: t.TempDir(), Port: port})
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("busy port: err = %v, want address already in use", err)
	}
	if _, err := natsjs.RunServer(natsjs.ServerConfig{}); err == nil {
		t.Error("RunServer without a store dir succeeded")
	}
}

func TestServerKeepsDataAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	run := func(publish bool) uint64 {
		s, err := natsjs.RunServer(natsjs.ServerConfig{StoreDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Shutdown()
		b, err := natsjs.Connect(ctx, natsjs.Config{URL: s.ClientURL()})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if err := b.EnsureStream(ctx, natsjs.ServiceStream("location")); err != nil {
			t.Fatal(err)
		}
		if publish {
			if _, err := b.Publish(ctx, natsjs.Message{ID: "1", Subject: "sysops.location.zip_added", Data: []byte("{}")}); err != nil {
				t.Fatal(err)
			}
		}
		n, err := b.StreamMessages(ctx, "SYSOPS_LOCATION")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	run(true)
	if n := run(false); n != 1 {
		t.Errorf("after restart the stream holds %d messages, want 1", n)
	}
}

func TestConnectErrors(t *testing.T) {
	ctx := context.Background()
	_, err := natsjs.Connect(ctx, natsjs.Config{URL: "nats://u:hunter2@127.0.0.1:1", ConnectTimeout: time.Second})
	if err == nil {
		t.Fatal("connected to a closed port")
	}
	if strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("error %q should name the server and hide the password", err)
	}
	if _, err := natsjs.Connect(ctx, natsjs.Config{}); err == nil {
		t.Error("Connect without a URL succeeded")
	}
}

func TestPingAfterServerStops(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "js")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := natsjs.RunServer(natsjs.ServerConfig{StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	b, err := natsjs.Connect(context.Background(), natsjs.Config{URL: s.ClientURL()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Ping(context.Background()); err != nil {
		t.Fatalf("Ping with the server up: %v", err)
	}
	s.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := b.Ping(ctx); err == nil {
		t.Error("Ping succeeded with the server down")
	}
}

// TestConformanceCluster runs the suite against a three-node cluster,
// whose streams the broker replicates on all three by itself.
func TestConformanceCluster(t *testing.T) {
	_, url := brokertest.RunCluster(t, 3)
	b, err := natsjs.Connect(t.Context(), natsjs.Config{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Replicas() != 3 {
		t.Errorf("replicas on a cluster of 3 = %d, want 3", b.Replicas())
	}
	brokertest.Run(t, connector(url))
}

// TestClusterOutlivesANode: on a cluster of three the broker's streams
// are replicated on every node, so when the node that leads a stream
// dies another takes over, and nothing stored is lost: every message
// published before and after is delivered. (With one replica, the
// stream dies with its node.)
func TestClusterOutlivesANode(t *testing.T) {
	nodes, url := brokertest.RunCluster(t, 3)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	b, err := natsjs.Connect(ctx, natsjs.Config{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	stream := natsjs.StreamSpec{Name: "OUTLIVE", Subjects: []string{"outlive.>"}}
	if err := b.EnsureDeadLetterStream(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.EnsureStream(ctx, stream); err != nil {
		t.Fatal(err)
	}
	const n = 40
	publish := func(i int) {
		t.Helper()
		// While the cluster elects a new leader for the stream, a publish
		// fails, or its acknowledgement is lost with the node; the
		// publisher (the relay) bounds each attempt and tries again, as
		// here.
		for {
			attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := b.Publish(attempt, natsjs.Message{ID: fmt.Sprint("m-", i), Subject: "outlive.m", Data: []byte("x")})
			cancel()
			if err == nil {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("publish m-%d: %v", i, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for i := range n / 2 {
		publish(i)
	}
	// The node that leads the stream dies.
	leader(t, nodes, url, stream.Name).Shutdown()
	for i := n / 2; i < n; i++ {
		publish(i)
	}
	var mu sync.Mutex
	got := map[string]bool{}
	sub, err := b.Subscribe(ctx, natsjs.ConsumerSpec{Stream: stream.Name, Durable: "outlive"}, func(_ context.Context, d *natsjs.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		got[d.ID] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Stop()
	for {
		mu.Lock()
		k := len(got)
		mu.Unlock()
		if k == n {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%d of %d messages delivered after a node died", k, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r := b.Replicas(); r != 3 {
		t.Errorf("replicas = %d, want 3", r)
	}
}

// TestSubscriptionOutlivesAServerRestart: a subscription rides out its
// server going away and coming back on the same address: it is neither
// ended nor left waiting, and what is published after the return is
// delivered to it. Stopped while the server is gone, it stops at once.
func TestSubscriptionOutlivesAServerRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	srv := brokertest.RunRestartable(t)
	b := brokertest.Connect(t, srv.Server)
	sub, expect := recording(ctx, t, b, "RESTART", "restart.>")
	if _, err := b.Publish(ctx, natsjs.Message{ID: "before", Subject: "restart.m", Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	expect("before")
	srv.Stop()
	srv.Start()
	for {
		attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := b.Publish(attempt, natsjs.Message{ID: "after", Subject: "restart.m", Data: []byte("x")})
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("publish after the restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	expect("after")

	// With the server gone again, Stop does not wait for it: a drain
	// waits for a round trip that would take the client's flush timeout
	// (10 s) to give up on.
	srv.Stop()
	began := time.Now()
	sub.Stop()
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("Stop took %v with the server gone", took)
	}
}

// TestSubscriptionOutlivesItsConsumer: the durable consumer is deleted on
// the server under a running subscription (an operator's mistake), then
// its stream is deleted and created again. Each time the subscription
// creates its consumer again and goes on: what is published afterwards is
// delivered, and it does not end.
func TestSubscriptionOutlivesItsConsumer(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	srv := brokertest.RunServer(t)
	b := brokertest.Connect(t, srv)
	_, expect := recording(ctx, t, b, "GONE", "gone.>")
	if _, err := b.Publish(ctx, natsjs.Message{ID: "before", Subject: "gone.m", Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	expect("before")
	if err := brokertest.JetStream(t, srv.ClientURL()).DeleteConsumer(ctx, "GONE", "gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(ctx, natsjs.Message{ID: "after", Subject: "gone.m", Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	expect("after")

	// The stream itself goes, and is created again a while later: the
	// subscription keeps trying until it can create its consumer again.
	if err := b.DeleteStream(ctx, "GONE"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if err := b.EnsureStream(ctx, natsjs.StreamSpec{Name: "GONE", Subjects: []string{"gone.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(ctx, natsjs.Message{ID: "again", Subject: "gone.m", Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	expect("again")
}

// TestStreamsComeBackAfterTheBrokerLostThem: the server comes back
// without its store (a container restarted without its volume): no
// stream, no consumer. The broker creates again the streams it ensured,
// at the first publish that finds none, and the subscription its
// consumer, so the process goes on without a restart — for a single
// message and for a batch.
func TestStreamsComeBackAfterTheBrokerLostThem(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	srv := brokertest.RunRestartable(t)
	b := brokertest.Connect(t, srv.Server)
	_, expect := recording(ctx, t, b, "LOST", "lost.>")
	if _, err := b.Publish(ctx, natsjs.Message{ID: "before", Subject: "lost.m", Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	expect("before")
	wipe := func() {
		srv.Stop()
		srv.Wipe()
		srv.Start()
		for b.Ping(ctx) != nil { // reconnected
			if ctx.Err() != nil {
				t.Fatal("never reconnected")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	wipe()
	if _, err := b.Publish(ctx, natsjs.Message{ID: "one", Subject: "lost.m", Data: []byte("x")}); err != nil {
		t.Fatalf("the first publish after the loss: %v", err)
	}
	expect("one") // within two missed heartbeats of the server's return
	for _, name := range []string{"LOST", "SYSOPS_DLQ"} {
		if _, err := b.StreamMessages(ctx, name); err != nil {
			t.Errorf("stream %s not made again: %v", name, err)
		}
	}

	wipe()
	batch := []natsjs.Message{{ID: "b1", Subject: "lost.m", Data: []byte("x")}, {ID: "b2", Subject: "lost.m", Data: []byte("x")}}
	_, errs := b.PublishBatch(ctx, batch)
	for i, err := range errs {
		if err != nil && !errors.Is(err, natsjs.ErrStreamMadeAgain) {
			t.Errorf("message %d of the batch that found its stream gone: %v, want ErrStreamMadeAgain", i, err)
		}
	}
	// A batch's failed messages stay failed, for its caller to send
	// again in its order: the next try finds the stream.
	if _, errs = b.PublishBatch(ctx, batch); errors.Join(errs...) != nil {
		t.Fatalf("the batch sent again: %v", errors.Join(errs...))
	}
	if n, err := b.StreamMessages(ctx, "LOST"); err != nil || n != 2 {
		t.Errorf("the stream made again holds %d messages (%v), want the batch's 2", n, err)
	}
}

// TestNoDeadLetterStreamYet: on a broker no service has run on, there is
// no dead-letter stream: the list is empty, and a dead letter asked for
// by number is not there (ErrNoDeadLetter), rather than an API error.
func TestNoDeadLetterStreamYet(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	b, err := natsjs.Connect(ctx, natsjs.Config{URL: brokertest.RunServer(t).ClientURL()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if dls, err := b.DeadLetters(ctx, 0, 10); err != nil || len(dls) != 0 {
		t.Errorf("DeadLetters = %v, %v; want none", dls, err)
	}
	if _, err := b.Redrive(ctx, 1); !errors.Is(err, natsjs.ErrNoDeadLetter) || !strings.Contains(err.Error(), "no dead-letter stream") {
		t.Errorf("Redrive = %v", err)
	}
	if err := b.DiscardDeadLetter(ctx, 1); !errors.Is(err, natsjs.ErrNoDeadLetter) {
		t.Errorf("DiscardDeadLetter = %v", err)
	}
}

// recording creates stream (with the dead-letter stream) and subscribes
// to it with a durable named after it, stopped when the test ends.
// expect(id) waits until id is delivered, skipping redeliveries of
// earlier messages, and fails the test if the subscription ends first.
func recording(ctx context.Context, t *testing.T, b *natsjs.Broker, stream, subjects string) (*natsjs.Subscription, func(id string)) {
	t.Helper()
	if err := b.EnsureDeadLetterStream(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.EnsureStream(ctx, natsjs.StreamSpec{Name: stream, Subjects: []string{subjects}}); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 10)
	sub, err := b.Subscribe(ctx, natsjs.ConsumerSpec{Stream: stream, Durable: strings.ToLower(stream)}, func(_ context.Context, d *natsjs.Delivery) error {
		got <- d.ID
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Stop() })
	return sub, func(id string) {
		t.Helper()
		for {
			select {
			case g := <-got:
				if g == id {
					return
				}
			case <-sub.Done():
				t.Fatalf("the subscription ended: %v", sub.Stop())
			case <-ctx.Done():
				t.Fatalf("%s never delivered", id)
			}
		}
	}
}

// TestFullServerRefusesForNow: a server whose JetStream store is full
// (ServerConfig.MaxStore) refuses publishes with an error IsUnavailable
// recognizes — the broker's state, not the message's — which IsRejected
// does not; once space is freed the same message is stored.
func TestFullServerRefusesForNow(t *testing.T) {
	ctx := context.Background()
	srv := brokertest.RunServerWith(t, natsjs.ServerConfig{MaxStore: 64 << 10})
	b := brokertest.Connect(t, srv)
	if err := b.EnsureStream(ctx, natsjs.StreamSpec{Name: "FULL", Subjects: []string{"full.>"}}); err != nil {
		t.Fatal(err)
	}
	msg := func(i int) natsjs.Message {
		return natsjs.Message{ID: fmt.Sprint("m", i), Subject: "full.x", Data: []byte(strings.Repeat("x", 4<<10))}
	}
	var refused error
	var i int
	for i = range 100 {
		if _, refused = b.Publish(ctx, msg(i)); refused != nil {
			break
		}
	}
	if refused == nil {
		t.Fatal("100 messages of 4 KB fit in a store of 64 KB")
	}
	if !natsjs.IsUnavailable(refused) || natsjs.IsRejected(refused) {
		t.Errorf("publish to a full store: %v; IsUnavailable %t, IsRejected %t, want true and false",
			refused, natsjs.IsUnavailable(refused), natsjs.IsRejected(refused))
	}
	if natsjs.IsUnavailable(errors.New("anything")) || natsjs.IsUnavailable(nil) {
		t.Error("IsUnavailable of an error that is not the broker's")
	}
	s, err := brokertest.JetStream(t, srv.ClientURL()).Stream(ctx, "FULL")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(ctx, msg(i)); err != nil {
		t.Errorf("the refused message once space was freed: %v", err)
	}
}

// TestOfflineStreamIsUnavailable: on a cluster, a stream of one replica
// whose node is down is offline while the cluster still answers: a
// publish to it fails with an error IsUnavailable recognizes (the
// broker's state; the stream returns with its node), alone or in a
// batch, while a publish to a subject no stream holds is not.
func TestOfflineStreamIsUnavailable(t *testing.T) {
	nodes, url := brokertest.RunCluster(t, 3)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	b, err := natsjs.Connect(ctx, natsjs.Config{URL: url, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.EnsureStream(ctx, natsjs.StreamSpec{Name: "ONE", Subjects: []string{"one.>"}}); err != nil {
		t.Fatal(err)
	}
	leader(t, nodes, url, "ONE").Shutdown()
	msg := func(id, subject string) natsjs.Message {
		return natsjs.Message{ID: id, Subject: subject, Data: []byte("x")}
	}
	// The client may still be reconnecting to another node: wait for the
	// cluster to answer that the stream is offline.
	var single error
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		pctx, c := context.WithTimeout(ctx, 3*time.Second)
		_, single = b.Publish(pctx, msg("a", "one.x"))
		c()
		if natsjs.IsUnavailable(single) || time.Now().After(deadline) {
			break
		}
	}
	if single == nil || !natsjs.IsUnavailable(single) || !errors.Is(single, natsjs.ErrStreamOffline) {
		t.Errorf("publish to the offline stream: %v, want unavailability (ErrStreamOffline)", single)
	}
	pctx, c := context.WithTimeout(ctx, 5*time.Second)
	_, errs := b.PublishBatch(pctx, []natsjs.Message{msg("b", "one.x"), msg("c", "one.y"), msg("d", "nowhere.x")})
	c()
	if !natsjs.IsUnavailable(errs[0]) || !natsjs.IsUnavailable(errs[1]) {
		t.Errorf("batch to the offline stream: %v, %v; want unavailability", errs[0], errs[1])
	}
	if errs[2] == nil || natsjs.IsUnavailable(errs[2]) {
		t.Errorf("a subject no stream holds: %v, want an error that is not unavailability", errs[2])
	}
}

// leader returns the node of the cluster that leads the stream.
func leader(t *testing.T, nodes []*natsjs.Server, url, stream string) *natsjs.Server {
	t.Helper()
	st, err := brokertest.JetStream(t, url).Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context())
	if err != nil || info.Cluster == nil {
		t.Fatalf("stream info: %v %+v", err, info)
	}
	i := slices.IndexFunc(nodes, func(s *natsjs.Server) bool { return s.Name() == info.Cluster.Leader })
	if i < 0 {
		t.Fatalf("the stream's leader %q is none of the nodes", info.Cluster.Leader)
	}
	return nodes[i]
}

// TestStoreDirTakenOnce: two embedded servers never share a store
// directory (they would corrupt it): a second one is refused with
// ErrStoreInUse, naming the directory, until the first shuts down.
func TestStoreDirTakenOnce(t *testing.T) {
	dir := t.TempDir()
	first, err := natsjs.RunServer(natsjs.ServerConfig{StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	second, err := natsjs.RunServer(natsjs.ServerConfig{StoreDir: dir})
	if err == nil {
		second.Shutdown()
		first.Shutdown()
		t.Fatal("a second server started on the same store directory")
	}
	if !errors.Is(err, natsjs.ErrStoreInUse) || !strings.Contains(err.Error(), dir) {
		t.Errorf("second server: %v, want ErrStoreInUse naming %s", err, dir)
	}
	first.Shutdown()
	again, err := natsjs.RunServer(natsjs.ServerConfig{StoreDir: dir})
	if err != nil {
		t.Fatalf("a server on the store once the first shut down: %v", err)
	}
	again.Shutdown()
}
