package natsjs

import (
	"context"
	"testing"
)

// A broker reaches an embedded server over TCP unless told to connect in
// process.
func TestInProcessIsOptIn(t *testing.T) {
	ctx := context.Background()
	s, err := RunServer(ServerConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	for _, in := range []bool{false, true} {
		cfg := Config{URL: s.ClientURL()}
		if in {
			cfg.InProcess = s
		}
		b, err := Connect(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if b.InProcess() != in {
			t.Errorf("Config.InProcess set: %v; connected to %q", in, b.nc.ConnectedAddr())
		}
		if err := b.EnsureStream(ctx, ServiceStream("location")); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Publish(ctx, Message{ID: "1", Subject: "sysops.location.zip_added", Data: []byte("{}")}); err != nil {
			t.Errorf("publish (in process %v): %v", in, err)
		}
		b.Close()
	}
}
