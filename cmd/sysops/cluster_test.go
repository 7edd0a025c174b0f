package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/sysops-squad/sysops/natsjs"
	"github.com/sysops-squad/sysops/natsjs/brokertest"
)

// TestUpOnANATSCluster: `sysops up --nats` against a three-node JetStream
// cluster replicates every stream on the three nodes by itself, and the
// system outlives a node: after the node leading the audit stream dies,
// requests are answered, every outbox drains, and the audit records of the
// work done since arrive.
func TestUpOnANATSCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster and the whole system")
	}
	nodes, url := brokertest.RunCluster(t, 3)
	p := start(t, "up", "--data-dir", t.TempDir(), "--addr", "127.0.0.1:0", "--nats", url)
	services := p.table(t)
	g := &gatewayCall{api: services["gateway"], http: &http.Client{Timeout: 15 * time.Second}}
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()

	js := brokertest.JetStream(t, url)
	streams := 0
	auditLeader := ""
	for name := range js.StreamNames(ctx).Name() {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		streams++
		if info.Config.Replicas != 3 {
			t.Errorf("stream %s has %d replicas, want 3", name, info.Config.Replicas)
		}
		if name == "SYSOPS_AUDIT" && info.Cluster != nil {
			auditLeader = info.Cluster.Leader
		}
	}
	if streams < 3 || auditLeader == "" {
		t.Fatalf("%d streams, the audit stream led by %q: want the system's streams, the audit stream among them", streams, auditLeader)
	}

	// Work before and after the audit stream's leader dies.
	post := func(path, key string, body any) map[string]any {
		t.Helper()
		for ctx.Err() == nil {
			st, out, ok := g.post(ctx, path, key, body)
			if ok {
				if st != http.StatusCreated {
					t.Fatalf("%s: %d %v", path, st, out)
				}
				return out
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("%s: no answer", path)
		return nil
	}
	post("/api/experts", "cluster-expert", map[string]any{"name": "Hugo", "email": "hugo@example.com",
		"skills": []string{"printer"}, "zip": "10001", "capacity": 10})
	register := func(n int) string {
		out := post("/api/customers", fmt.Sprint("cluster-register-", n), map[string]string{"name": fmt.Sprint("Ada ", n),
			"email": fmt.Sprintf("ada%d@example.com", n), "zip": "10001", "plan": "premium"})
		cu, _ := out["customer"].(map[string]any)
		id, _ := cu["id"].(string)
		return id
	}
	before := register(1)
	leader := slices.IndexFunc(nodes, func(s *natsjs.Server) bool { return s.Name() == auditLeader })
	if leader < 0 {
		t.Fatalf("the audit stream's leader %q is none of the nodes", auditLeader)
	}
	nodes[leader].Shutdown()
	after := register(2)
	out := post("/api/tickets", "cluster-ticket", map[string]string{"customer_id": after, "description": "jam",
		"priority": "high", "skill": "printer", "zip": "10001"})
	tk, _ := out["ticket"].(map[string]any)
	ticket, _ := tk["id"].(string)

	waitSettled(ctx, t, g, "the node died", [][2]string{{"customer", before}, {"customer", after}, {"ticket", ticket}})
	if err := p.stop(t, os.Interrupt); err != nil {
		t.Fatalf("exit %v; stderr:\n%s", err, p.stderr)
	}
}

// TestUpRidesOutABrokerOutage: with `sysops up --nats`, the broker going
// away stops no request: the work done meanwhile commits with its events
// in the services' outboxes. Once the broker is back on its address, every
// outbox drains, nothing dead, and the audit records of the work done
// before, during and after the outage arrive. Then the broker comes back
// without its store, and the services create their streams again.
func TestUpRidesOutABrokerOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole system")
	}
	srv := brokertest.RunRestartable(t)
	p := start(t, "up", "--data-dir", t.TempDir(), "--addr", "127.0.0.1:0", "--nats", srv.ClientURL())
	services := p.table(t)
	g := &gatewayCall{api: services["gateway"], http: &http.Client{Timeout: 15 * time.Second}}
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()

	post := func(path, key string, body any) map[string]any {
		t.Helper()
		st, out, ok := g.post(ctx, path, key, body)
		if !ok || st != http.StatusCreated {
			t.Fatalf("%s: %d %v (answered: %v)", path, st, out, ok)
		}
		return out
	}
	register := func(n int) string {
		out := post("/api/customers", fmt.Sprint("outage-register-", n), map[string]string{"name": fmt.Sprint("Ada ", n),
			"email": fmt.Sprintf("ada%d@example.com", n), "zip": "10001", "plan": "premium"})
		cu, _ := out["customer"].(map[string]any)
		id, _ := cu["id"].(string)
		return id
	}
	post("/api/experts", "outage-expert", map[string]any{"name": "Hugo", "email": "hugo@example.com",
		"skills": []string{"printer"}, "zip": "10001", "capacity": 10})
	before := register(1)

	srv.Stop()
	during := register(2)
	out := post("/api/tickets", "outage-ticket", map[string]string{"customer_id": during, "description": "jam",
		"priority": "high", "skill": "printer", "zip": "10001"})
	tk, _ := out["ticket"].(map[string]any)
	ticket, _ := tk["id"].(string)
	// The broker stays away for a few seconds: long enough for every
	// relay to have tried and found it gone.
	time.Sleep(3 * time.Second)
	srv.Start()
	after := register(3)

	waitSettled(ctx, t, g, "the broker came back", [][2]string{{"customer", before}, {"customer", during}, {"ticket", ticket}, {"customer", after}})

	// The broker comes back without its data: every stream and consumer
	// is gone. The services create them again and go on.
	srv.Stop()
	srv.Wipe()
	srv.Start()
	wiped := register(4)
	waitSettled(ctx, t, g, "the broker came back empty", [][2]string{{"customer", wiped}})
	if err := p.stop(t, os.Interrupt); err != nil {
		t.Fatalf("exit %v; stderr:\n%s", err, p.stderr)
	}
}

// waitSettled waits until each entity (type, id) has an audit record and
// every service's outbox is drained with nothing dead, or fails the test
// when ctx ends; since says after what, for its messages.
func waitSettled(ctx context.Context, t *testing.T, g *gatewayCall, since string, entities [][2]string) {
	t.Helper()
	for _, want := range entities {
		for {
			_, out := g.get(ctx, "/api/audit?entity_type="+want[0]+"&entity_id="+want[1])
			if records, _ := out["records"].([]any); len(records) > 0 {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("no audit record of %s %s after %s", want[0], want[1], since)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	for _, s := range registry() {
		if s.Name == "gateway" {
			continue
		}
		for {
			st, out := g.get(ctx, "/api/ops/outbox/"+s.Name+"/stats")
			if st != http.StatusOK || (out["pending"] == 0.0 && out["dead"] == 0.0) {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("outbox of %s not drained after %s: %v", s.Name, since, out)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}
