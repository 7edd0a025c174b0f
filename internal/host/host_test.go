package host_test

import (
	"cmp"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/sysops-squad/sysops/internal/host"
	"github.com/sysops-squad/sysops/natsjs"
	"github.com/sysops-squad/sysops/natsjs/brokertest"
	"github.com/sysops-squad/sysops/sqldb"
)

func spec(migration string) host.Spec {
	return host.Spec{
		Name:       "widget",
		Migrations: fstest.MapFS{"00001_widget.sql": {Data: []byte("-- +goose Up\n" + migration + "\n")}},
		Streams:    []natsjs.StreamSpec{natsjs.ServiceStream("widget")},
		Start: func(ctx context.Context, deps host.Deps) (http.Handler, error) {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var n int
				if err := deps.DB.QueryRowContext(r.Context(), "SELECT count(*) FROM widget").Scan(&n); err != nil {
					http.Error(w, err.Error(), 500)
					return
				}
				io.WriteString(w, "widgets: 0")
			}), nil
		},
	}
}

func TestStartServesHealthAndService(t *testing.T) {
	ctx := context.Background()
	nats := brokertest.RunServer(t)
	h, err := host.Start(ctx, host.Config{
		Spec:        spec("CREATE TABLE widget (id INTEGER PRIMARY KEY);"),
		DatabaseURL: "sqlite:" + filepath.Join(t.TempDir(), "widget.db"),
		NATSURL:     nats.ClientURL(),
		Addr:        "127.0.0.1:0",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Shutdown(ctx)

	for path, want := range map[string]string{"/healthz": `"status":"ok"`, "/readyz": `"status":"ready"`, "/anything": "widgets: 0"} {
		resp, err := http.Get(h.URL() + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
			t.Errorf("GET %s = %d %s, want 200 with %s", path, resp.StatusCode, b, want)
		}
	}

	// A path not in canonical form is a JSON 400 naming it, not a
	// redirect that would drop a POST's body.
	for _, path := range []string{"/widgets//1", "/widgets/./1", "/a/../readyz"} {
		req, _ := http.NewRequest("POST", h.URL()+path, strings.NewReader(`{}`))
		req.URL.Opaque = path // as sent, uncleaned
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(b), "canonical") || !strings.Contains(string(b), path) {
			t.Errorf("POST %s = %d %s, want 400 naming the path", path, resp.StatusCode, b)
		}
	}

	nats.Shutdown()
	resp, err := http.Get(h.URL() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 503 || body.Error.Code != "unavailable" || !strings.Contains(body.Error.Message, "broker") {
		t.Errorf("readyz with the broker down = %d %+v", resp.StatusCode, body)
	}
}

func TestStartFailures(t *testing.T) {
	ctx := context.Background()
	nats := brokertest.RunServer(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		name      string
		migration string
		dbURL     string
		natsURL   string
		addr      string
		want      string
	}{
		{"failed migration", "CREATE TABLE widget (id INTEGER PRIMARY KEY); CREATE TABLE widget (x);", "", "", "", "00001_widget.sql"},
		{"database unreachable", "", "postgres://postgres@127.0.0.1:1/x?connect_timeout=2", "", "", "connection refused"},
		{"broker unreachable", "", "", "nats://127.0.0.1:1", "", "127.0.0.1:1"},
		{"address in use", "", "", "", busy.Addr().String(), "address already in use"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := host.Config{
				Spec:        spec(cmp.Or(tt.migration, "CREATE TABLE widget (id INTEGER PRIMARY KEY);")),
				DatabaseURL: cmp.Or(tt.dbURL, "sqlite:"+filepath.Join(t.TempDir(), "widget.db")),
				NATSURL:     cmp.Or(tt.natsURL, nats.ClientURL()),
				Addr:        cmp.Or(tt.addr, "127.0.0.1:0"),
			}
			h, err := host.Start(ctx, cfg)
			if err == nil {
				h.Shutdown(ctx)
				t.Fatal("Start succeeded")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "widget: ") || !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line starting 'widget: ' mentioning %q", msg, tt.want)
			}
		})
	}
}

// TestStartOnANewerSchema: a service whose database a newer build
// migrated (a rolling upgrade, or one rolled back) starts on it, and
// warns that the schema is ahead of it.
func TestStartOnANewerSchema(t *testing.T) {
	ctx := context.Background()
	nats := brokertest.RunServer(t)
	dbURL := "sqlite:" + filepath.Join(t.TempDir(), "widget.db")
	s := spec("CREATE TABLE widget (id INTEGER PRIMARY KEY);")
	newer := fstest.MapFS{
		"00001_widget.sql": s.Migrations.(fstest.MapFS)["00001_widget.sql"],
		"00002_more.sql":   {Data: []byte("-- +goose Up\nALTER TABLE widget ADD COLUMN colour TEXT;\n")},
	}
	db, err := sqldb.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	res, err := sqldb.Migrate(ctx, db, "widget", newer)
	db.Close()
	if err != nil || res.Ahead() || res.Version != 2 || res.Latest != 2 {
		t.Fatalf("the newer build's migration: %+v, %v", res, err)
	}
	var log strings.Builder
	h, err := host.Start(ctx, host.Config{Spec: s, DatabaseURL: dbURL, NATSURL: nats.ClientURL(), Addr: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatalf("start on a newer schema: %v", err)
	}
	h.Shutdown(ctx)
	if !strings.Contains(log.String(), "schema newer than this build") || !strings.Contains(log.String(), "version=2 build=1") {
		t.Errorf("no warning that the schema is ahead; the log:\n%s", log.String())
	}
}

// TestStartCanBeInterrupted: a service whose start hangs (its database
// not answering, say) stops starting when the caller's context ends —
// Ctrl-C or SIGTERM during sysops up — instead of holding the process.
func TestStartCanBeInterrupted(t *testing.T) {
	nats := brokertest.RunServer(t)
	s := spec("CREATE TABLE widget (id INTEGER PRIMARY KEY);")
	started := make(chan struct{})
	s.Start = func(ctx context.Context, deps host.Deps) (http.Handler, error) {
		close(started)
		<-ctx.Done() // what a statement on a hung database does at best
		return nil, ctx.Err()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		h, err := host.Start(ctx, host.Config{Spec: s, DatabaseURL: "sqlite:" + filepath.Join(t.TempDir(), "widget.db"),
			NATSURL: nats.ClientURL(), Addr: "127.0.0.1:0"})
		if err == nil {
			h.Shutdown(context.Background())
		}
		done <- err
	}()
	<-started
	cancel()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "widget: start") {
			t.Errorf("Start after its context ended: %v, want the start's error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Start still running 10 s after its context ended")
	}
}
