package natsjs_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
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
