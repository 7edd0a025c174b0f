package natsjs

import (
	"context"
	"net"
	"testing"
	"time"
)

// A broker of the process that embeds the server reaches it through a
// pipe, not TCP, and finds a server restarted on the same address.
func TestEmbeddedServerIsDialedInProcess(t *testing.T) {
	ctx := context.Background()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	dir := t.TempDir()
	s, err := RunServer(ServerConfig{StoreDir: dir, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Connect(ctx, Config{URL: s.ClientURL()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !b.InProcess() {
		t.Errorf("connected to %q, want the in-process pipe", b.nc.ConnectedAddr())
	}
	if err := b.EnsureStream(ctx, ServiceStream("location")); err != nil {
		t.Fatal(err)
	}

	s.Shutdown()
	if _, ok := inProcess.Load(s.addr); ok {
		t.Error("a stopped server is still registered for in-process dialing")
	}
	s, err = RunServer(ServerConfig{StoreDir: dir, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	deadline := time.Now().Add(10 * time.Second)
	for b.Ping(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the broker did not reconnect to the restarted server within 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !b.InProcess() {
		t.Errorf("reconnected to %q, want the in-process pipe", b.nc.ConnectedAddr())
	}
	if _, err := b.Publish(ctx, Message{ID: "1", Subject: "sysops.location.zip_added", Data: []byte("{}")}); err != nil {
		t.Errorf("publish after the restart: %v", err)
	}

	// Any other address is dialed over the network.
	other, err := (&dialer{}).Dial("tcp", "127.0.0.1:1")
	if err == nil {
		other.Close()
		t.Error("dialed a closed port")
	}
}
