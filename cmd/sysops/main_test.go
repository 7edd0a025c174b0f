package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/natsjs"
	"github.com/sysops-squad/sysops/outbox"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

// binary is the sysops command, built once for the tests that run it as a
// real process.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sysops-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "sysops")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build sysops: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running sysops process.
type proc struct {
	cmd    *exec.Cmd
	stdout *bufio.Scanner
	stderr *bytes.Buffer
	done   chan error
}

// start runs sysops with args and a clean environment (no SYSOPS_*).
func start(t *testing.T, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SYSOPS_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, stdout: bufio.NewScanner(out), stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})
	return p
}

// table reads the service table that up and serve print once ready:
// service name → URL. It fails the test if the process exits first.
func (p *proc) table(t *testing.T) map[string]string {
	t.Helper()
	rows := map[string]string{}
	lines := make(chan string)
	go func() {
		defer close(lines)
		for p.stdout.Scan() {
			lines <- p.stdout.Text()
		}
	}()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				err := p.cmd.Wait()
				t.Fatalf("sysops exited (%v) before printing its table; stderr:\n%s", err, p.stderr)
			}
			f := strings.Fields(line)
			if len(f) >= 2 && f[0] != "SERVICE" {
				rows[f[0]] = f[1]
			}
			if len(f) > 0 && f[0] == "nats" {
				go func() { // keep draining
					for range lines {
					}
				}()
				return rows
			}
		case <-timeout:
			t.Fatalf("no table after 60 s; stderr:\n%s", p.stderr)
		}
	}
}

// stop sends sig and returns the exit error, failing the test if the
// process has not exited within the shutdown budget plus a margin.
func (p *proc) stop(t *testing.T, sig os.Signal) error {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	select {
	case err := <-p.done:
		return err
	case <-time.After(shutdownBudget + 5*time.Second):
		_ = p.cmd.Process.Kill()
		t.Fatalf("sysops did not exit within %s of %v; stderr:\n%s", shutdownBudget, sig, p.stderr)
		return nil
	}
}

func getJSON(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("GET %s: body %q is not JSON: %v", url, b, err)
	}
	return resp.StatusCode, m
}

func checkHealth(t *testing.T, services map[string]string) {
	t.Helper()
	for _, s := range registry() {
		url, ok := services[s.Name]
		if !ok {
			t.Errorf("service %s missing from the table %v", s.Name, services)
			continue
		}
		for _, path := range []string{"/healthz", "/readyz"} {
			if code, body := getJSON(t, url+path); code != 200 {
				t.Errorf("%s%s = %d %v", s.Name, path, code, body)
			}
		}
	}
}

func TestUpRunsEveryServiceAndKeepsData(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")

	p := start(t, "up", "--data-dir", dataDir, "--addr", "127.0.0.1:0")
	services := p.table(t)
	checkHealth(t, services)
	if code, body := getJSON(t, services["location"]+"/zipcodes/60601"); code != 200 || body["city"] != "Chicago" {
		t.Errorf("zip lookup = %d %v", code, body)
	}
	if err := p.stop(t, os.Interrupt); err != nil {
		t.Fatalf("up exited with %v after Ctrl-C, want 0; stderr:\n%s", err, p.stderr)
	}

	// An operator adds a zip code while the system is down.
	db, err := sql.Open("sqlite", filepath.Join(dataDir, "location.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO zip_code VALUES ('99950', 'Ketchikan', 'AK', 55.34, -131.64)`); err != nil {
		t.Fatalf("the first run left no location database: %v", err)
	}
	db.Close()

	p = start(t, "up", "--data-dir", dataDir, "--addr", "127.0.0.1:0")
	services = p.table(t)
	checkHealth(t, services)
	if code, body := getJSON(t, services["location"]+"/zipcodes/99950"); code != 200 || body["city"] != "Ketchikan" {
		t.Errorf("second run lost the data: %d %v", code, body)
	}
	if strings.Contains(p.stderr.String(), "migrated") {
		t.Errorf("second run migrated again:\n%s", p.stderr)
	}
	if err := p.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("up exited with %v after SIGTERM, want 0", err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "nats", "jetstream")); err != nil {
		t.Errorf("embedded NATS kept no data under the data dir: %v", err)
	}
}

// onPostgres returns the flags that put every service's database on the
// test server, under a prefix of its own, dropped when the test ends.
func onPostgres(t *testing.T, name string) []string {
	t.Helper()
	base := sqldbtest.PostgresURL(t)
	prefix := sqldbtest.RandomName(name) + "_"
	t.Cleanup(func() {
		var names []string
		for _, s := range registry() {
			names = append(names, s.Name)
		}
		sqldbtest.DropProvisioned(t, base, prefix, names...)
	})
	return []string{"--postgres", base, "--db-prefix", prefix}
}

func TestUpOnPostgres(t *testing.T) {
	p := start(t, append([]string{"up", "--data-dir", t.TempDir(), "--addr", "127.0.0.1:0"}, onPostgres(t, "up")...)...)
	services := p.table(t)
	checkHealth(t, services)
	if code, body := getJSON(t, services["location"]+"/zipcodes?near=02139&km=3"); code != 200 {
		t.Errorf("near query = %d %v", code, body)
	}
	if err := p.stop(t, os.Interrupt); err != nil {
		t.Fatalf("exit %v; stderr:\n%s", err, p.stderr)
	}
}

func TestServeOneService(t *testing.T) {
	srv, err := natsjs.RunServer(natsjs.ServerConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	dataDir := t.TempDir()

	p := start(t, "serve", "location", "--data-dir", dataDir, "--nats", srv.ClientURL(), "--addr", "127.0.0.1:0")
	services := p.table(t)
	if code, _ := getJSON(t, services["location"]+"/readyz"); code != 200 {
		t.Errorf("readyz = %d", code)
	}
	topo, err := readTopology(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if topo.Services["location"].URL != services["location"] || topo.NATSURL != srv.ClientURL() {
		t.Errorf("topology = %+v, want location at %s and NATS at %s", topo, services["location"], srv.ClientURL())
	}

	// With the broker gone the service is alive but not ready.
	srv.Shutdown()
	if code, _ := getJSON(t, services["location"]+"/healthz"); code != 200 {
		t.Errorf("healthz with the broker down = %d, want 200", code)
	}
	code, body := getJSON(t, services["location"]+"/readyz")
	if code != 503 || !strings.Contains(fmt.Sprint(body), "broker") {
		t.Errorf("readyz with the broker down = %d %v, want 503 naming the broker", code, body)
	}
	if err := p.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("serve exited with %v, want 0; stderr:\n%s", err, p.stderr)
	}
}

// TestBadConfiguration: every mistake stops sysops with one line naming the
// problem and a non-zero exit, never a panic or a usage dump.
func TestBadConfiguration(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port
	// up puts the first service on the port after --addr's.
	busyAddr := fmt.Sprintf("127.0.0.1:%d", busyPort-1)

	// A data directory whose broker store another server holds, as a
	// second sysops up on it would find it.
	held := t.TempDir()
	holder, err := natsjs.RunServer(natsjs.ServerConfig{StoreDir: filepath.Join(held, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Shutdown()

	tests := []struct {
		name string
		args []string
		want string
		env  []string
	}{
		{"data dir in use", []string{"up", "--data-dir", held}, "store directory in use by another server", nil},
		{"unreachable postgres", []string{"up", "--postgres", "postgres://postgres@127.0.0.1:1/test"}, "connection refused", nil},
		{"unknown url scheme", []string{"up", "--postgres", "mysql://root@127.0.0.1/x"}, "unknown database URL scheme", nil},
		{"port in use", []string{"up", "--addr", busyAddr}, "address already in use", nil},
		{"unwritable data dir", []string{"up", "--data-dir", filepath.Join(file, "data")}, "data directory", nil},
		{"unreachable nats", []string{"up", "--nats", "nats://127.0.0.1:1"}, "127.0.0.1:1", nil},
		{"bad addr", []string{"up", "--addr", "nowhere"}, "--addr", nil},
		{"bad log level", []string{"up", "--log-level", "loud"}, "--log-level", nil},
		{"pool of none", []string{"up", "--db-conns", "0"}, `--db-conns "0": want a whole number from 1 to 100`, nil},
		{"pool not a number", []string{"serve", "ticket", "--db-conns", "many"}, `--db-conns "many"`, nil},
		{"pool too small for postgres", []string{"up", "--postgres", "postgres://postgres@127.0.0.1:1/test", "--db-conns", "2"},
			"--db-conns 2: a service on PostgreSQL needs at least 3", nil},
		{"too many replicas", []string{"up", "--nats", "nats://127.0.0.1:1", "--nats-replicas", "7"}, `--nats-replicas "7": want a whole number from 1 to 5`, nil},
		{"replicas not a number", []string{"serve", "ticket", "--nats-replicas", "three"}, `--nats-replicas "three"`, nil},
		{"replicas on the embedded server", []string{"up", "--nats-replicas", "3"}, "--nats-replicas 3 needs --nats: the embedded server is one node", nil},
		{"bad consistency", []string{"up", "--consistency", "hopeful"}, "--consistency", nil},
		{"unknown service", []string{"serve", "nope"}, `unknown service "nope"`, nil},
		{"serve without nats", []string{"serve", "location"}, "no NATS server", nil},
		{"bad peer", []string{"serve", "location", "--nats", "nats://127.0.0.1:1", "--peer", "ticket"}, "--peer", nil},
		{"unknown flag", []string{"up", "--colour", "red"}, "unknown flag", nil},
		{"unknown command", []string{"launch"}, "unknown command", nil},
		{"unknown subcommand", []string{"bench", "bogus"}, `unknown command "bogus" for "sysops bench" (one of: outbox, saga)`, nil},
		{"unknown saga subcommand", []string{"saga", "frob"}, `unknown command "frob" for "sysops saga"`, nil},
		{"negative writers", []string{"bench", "outbox", "--writers", "-1"}, "--writers must not be negative", nil},
		{"unknown bench phase", []string{"bench", "outbox", "--phases", "Duration"}, `--phases has an unknown phase "Duration"`, nil},
		{"zero saga bench duration", []string{"bench", "saga", "--duration", "0s"}, "--duration 0s", nil},
		{"negative outbox outage", []string{"bench", "outbox", "--outage", "-1s"}, "--outage must not be negative", nil},
		{"negative saga outage", []string{"bench", "saga", "--outage", "-1s"}, "--outage -1s: want a length, or 0 to skip", nil},
		{"dlq without a number", []string{"dlq", "discard", "first"}, `"first" is not a dead letter's number`, nil},
		{"dlq without a broker", []string{"dlq", "list", "--data-dir", filepath.Join(filepath.Dir(file), "none")}, "no broker is recorded", nil},
		// seed goes where --addr says the gateway is (nothing listens there).
		{"seed on --addr", []string{"seed", "--addr", "127.0.0.1:1"}, "http://127.0.0.1:1/api/", nil},
		{"seed on SYSOPS_ADDR", []string{"seed"}, "http://127.0.0.1:2/api/", []string{"SYSOPS_ADDR=127.0.0.1:2"}},
		// The environment equivalents reach the same checks.
		{"SYSOPS_POSTGRES", []string{"up"}, "unknown database URL scheme", []string{"SYSOPS_POSTGRES=mysql://root@127.0.0.1/x"}},
		{"SYSOPS_DATA_DIR", []string{"up"}, filepath.Join(file, "env"), []string{"SYSOPS_DATA_DIR=" + filepath.Join(file, "env")}},
		{"SYSOPS_NATS", []string{"up"}, "127.0.0.1:2", []string{"SYSOPS_NATS=nats://127.0.0.1:2"}},
		{"SYSOPS_ADDR", []string{"up"}, "address already in use", []string{"SYSOPS_ADDR=" + busyAddr}},
		{"SYSOPS_LOG_LEVEL", []string{"up"}, "--log-level", []string{"SYSOPS_LOG_LEVEL=chatty"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{}, tt.args...)
			env := strings.Join(tt.env, " ")
			if !containsFlag(args, "--data-dir") && !strings.Contains(env, "SYSOPS_DATA_DIR") {
				args = append(args, "--data-dir", filepath.Join(t.TempDir(), "data"))
			}
			if !containsFlag(args, "--addr") && !strings.Contains(env, "SYSOPS_ADDR") && tt.args[0] == "up" {
				args = append(args, "--addr", "127.0.0.1:0")
			}
			cmd := exec.Command(binary, args...)
			cmd.Env = append(os.Environ(), tt.env...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			if err == nil {
				t.Fatalf("sysops %v exited 0, want an error", tt.args)
			}
			var last string
			for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
				if !strings.HasPrefix(line, "time=") { // log lines of what started before the failure
					if last != "" {
						t.Errorf("more than one error line:\n%s", stderr.String())
					}
					last = line
				}
			}
			if !strings.HasPrefix(last, "sysops: ") || !strings.Contains(last, tt.want) {
				t.Errorf("error line %q, want 'sysops: ...' mentioning %q", last, tt.want)
			}
			for _, bad := range []string{"panic", "goroutine ", "Usage:"} {
				if strings.Contains(stderr.String(), bad) {
					t.Errorf("stderr contains %q:\n%s", bad, stderr.String())
				}
			}
		})
	}
}

func containsFlag(args []string, flag string) bool {
	for _, a := range args {
		if a == flag {
			return true
		}
	}
	return false
}

func TestVersion(t *testing.T) {
	out, err := exec.Command(binary, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(out), "sysops ") || !strings.Contains(string(out), "go1.") {
		t.Errorf("version printed %q", out)
	}
}

func TestServiceAddrs(t *testing.T) {
	got, err := serviceAddrs("127.0.0.1:8080", 3)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:8082"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("addrs = %v, want %v", got, want)
	}
	if got, _ := serviceAddrs("127.0.0.1:0", 2); fmt.Sprint(got) != "[127.0.0.1:0 127.0.0.1:0]" {
		t.Errorf("port 0 gives %v, want free ports", got)
	}
	if _, err := serviceAddrs("127.0.0.1:65535", 2); err == nil {
		t.Error("ports past 65535 accepted")
	}
}

func TestOutboxCommands(t *testing.T) {
	ctx := context.Background()
	dataDir := t.TempDir()
	url, err := sqldb.Provision(ctx, dataDir, "location")
	if err != nil {
		t.Fatal(err)
	}
	db, err := sqldb.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := sqldb.Migrate(ctx, db, outbox.MigrationSet, outbox.Migrations()); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"ev-dead-1", "ev-dead-2"} {
		err := sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
			return outbox.Write(ctx, tx, sysops.Event{ID: id, Source: "/t", Type: "sysops.location.zip_added.v1",
				AggregateType: "zip", AggregateID: id})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.ExecContext(ctx, `UPDATE outbox SET status = 'dead', attempts = 10, last_error = 'stream not found'`); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(binary, append(args, "--data-dir", dataDir)...).CombinedOutput()
		if err != nil {
			t.Fatalf("sysops %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	out := run("outbox", "list", "--service", "location")
	for _, want := range []string{"ev-dead-1", "ev-dead-2", "stream not found", "dead 2"} {
		if !strings.Contains(out, want) {
			t.Errorf("list output lacks %q:\n%s", want, out)
		}
	}
	rows, err := outbox.List(ctx, db, outbox.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if out := run("outbox", "retry", "--service", "location", fmt.Sprint(rows[0].Seq)); !strings.Contains(out, "1 dead rows back to pending") {
		t.Errorf("retry: %s", out)
	}
	// Every dead row only when asked for with --all.
	for _, args := range [][]string{{"purge"}, {"purge", "--all", "1"}, {"retry"}} {
		out, err := exec.Command(binary, append(append([]string{"outbox"}, args...), "--service", "location", "--data-dir", dataDir)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "--all") {
			t.Errorf("sysops outbox %v: %v %s; want it refused, naming --all", args, err, out)
		}
	}
	if out := run("outbox", "purge", "--service", "location", "--all"); !strings.Contains(out, "1 dead rows purged") {
		t.Errorf("purge: %s", out)
	}
	stats, err := outbox.GetStats(ctx, db)
	if err != nil || stats.Pending != 1 || stats.Dead != 0 {
		t.Errorf("stats after retry and purge = %+v, %v; want 1 pending, 0 dead", stats, err)
	}
	cmd := exec.Command(binary, "outbox", "list", "--service", "nope", "--data-dir", dataDir)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), `unknown service "nope"`) {
		t.Errorf("unknown service: %v %s", err, out)
	}
}

// TestServeFindsPeersStartedLater: a service started before its peer finds
// it once the peer has written itself into the topology file.
func TestServeFindsPeersStartedLater(t *testing.T) {
	srv, err := natsjs.RunServer(natsjs.ServerConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	dataDir := t.TempDir()
	gw := start(t, "serve", "gateway", "--data-dir", dataDir, "--nats", srv.ClientURL(), "--addr", "127.0.0.1:0")
	gateway := gw.table(t)["gateway"]
	if code, _ := getJSON(t, gateway+"/api/zipcodes/94103"); code != http.StatusServiceUnavailable {
		t.Errorf("before location runs: %d, want 503", code)
	}
	loc := start(t, "serve", "location", "--data-dir", dataDir, "--nats", srv.ClientURL(), "--addr", "127.0.0.1:0")
	loc.table(t)
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, body := getJSON(t, gateway+"/api/zipcodes/94103")
		if code == 200 && body["city"] == "San Francisco" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway never found location: %d %v", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, p := range []*proc{gw, loc} {
		if err := p.stop(t, os.Interrupt); err != nil {
			t.Errorf("exit %v; stderr:\n%s", err, p.stderr)
		}
	}
}

// upWithBroker starts sysops up in a data directory of its own and
// connects to its broker; run runs a sysops command on that directory
// and returns its combined output.
func upWithBroker(t *testing.T) (p *proc, services map[string]string, b *natsjs.Broker, run func(args ...string) (string, error)) {
	t.Helper()
	dataDir := filepath.Join(t.TempDir(), "data")
	p = start(t, "up", "--data-dir", dataDir, "--addr", "127.0.0.1:0")
	services = p.table(t)
	b, err := natsjs.Connect(context.Background(), natsjs.Config{URL: services["nats"]})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return p, services, b, func(args ...string) (string, error) {
		t.Helper()
		out, err := exec.Command(binary, append(args, "--data-dir", dataDir)...).CombinedOutput()
		return string(out), err
	}
}

// TestInboxCommands: an audit record that arrives ahead of its
// predecessor is parked; "inbox list" shows it, "inbox skip" has the
// running audit service give up on the missing one and apply it.
func TestInboxCommands(t *testing.T) {
	ctx := context.Background()
	p, services, b, run := upWithBroker(t)
	data := `{"id":"r2","service":"billing","actor":"alice","action":"billing.charged","entity_type":"account","entity_id":"a1","at":"2026-11-24T00:00:00Z"}`
	m, err := natsjs.EventMessage(sysops.Event{ID: "r2", Source: "/test", Type: "sysops.audit.recorded.v1", Data: json.RawMessage(data),
		AggregateType: "audit", AggregateID: "billing/account/a1", Sequence: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(ctx, m); err != nil {
		t.Fatal(err)
	}
	var out string
	for range 100 {
		if out, err = run("inbox", "list"); err != nil {
			t.Fatalf("inbox list: %v\n%s", err, out)
		}
		if strings.Contains(out, "1 parked") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, want := range []string{"audit billing/account/a1", "1 parked"} {
		if !strings.Contains(out, want) {
			t.Fatalf("inbox list lacks %q:\n%s", want, out)
		}
	}
	if out, err := run("inbox", "skip", "audit", "billing/account/a1"); err != nil || !strings.Contains(out, "skipped #1..#1, applied 1") {
		t.Errorf("inbox skip: %v\n%s", err, out)
	}
	if out, _ := run("inbox", "list"); !strings.Contains(out, "0 parked") {
		t.Errorf("still parked after the skip:\n%s", out)
	}
	if code, body := getJSON(t, services["audit"]+"/audit?entity_id=a1"); code != 200 || !strings.Contains(fmt.Sprint(body), "r2") {
		t.Errorf("audit records after the skip = %d %v, want r2", code, body)
	}
	if out, err := run("inbox", "skip", "audit", "billing/account/a1"); err == nil || !strings.Contains(out, "nothing parked") {
		t.Errorf("second skip: %v\n%s", err, out)
	}
	if out, err := run("inbox", "skip", "audit", "x", "--service", "nope"); err == nil || !strings.Contains(out, `unknown service "nope"`) {
		t.Errorf("unknown service: %v\n%s", err, out)
	}
	if out, err := run("inbox", "list", "--service", "ticket"); err == nil || !strings.Contains(out, `"ticket" runs no inbox consumer`) {
		t.Errorf("service without a consumer: %v\n%s", err, out)
	}
	if err := p.stop(t, os.Interrupt); err != nil {
		t.Fatalf("up exited with %v", err)
	}
	if out, err := run("inbox", "skip", "audit", "x"); err == nil || !strings.Contains(out, "skip on audit") {
		t.Errorf("skip with the system down: %v\n%s", err, out)
	}
}

// TestDLQCommands: a message the audit consumer cannot take is listed by
// "dlq list" with the reason; "dlq redrive" sends it back to its subject,
// where the consumer takes it again (still malformed, it is dead-lettered
// anew); "dlq discard --all" drops what is left. The broker is found
// through the data directory's topology file.
func TestDLQCommands(t *testing.T) {
	ctx := context.Background()
	p, _, b, run := upWithBroker(t)
	if _, err := b.Publish(ctx, natsjs.Message{ID: "garbled-1", Subject: "sysops.audit.recorded", Data: []byte(`{"not":`)}); err != nil {
		t.Fatal(err)
	}
	// waitList waits until "dlq list" shows n dead letters and returns it.
	waitList := func(n int) string {
		t.Helper()
		var out string
		for range 100 {
			var err error
			if out, err = run("dlq", "list"); err != nil {
				t.Fatalf("dlq list: %v\n%s", err, out)
			}
			if strings.Contains(out, fmt.Sprintf("\n%d dead letter(s)", n)) {
				return out
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("dlq list never showed %d dead letters:\n%s", n, out)
		return ""
	}
	out := waitList(1)
	for _, want := range []string{"audit", "sysops.audit.recorded", "garbled-1", "malformed envelope"} {
		if !strings.Contains(out, want) {
			t.Errorf("dlq list lacks %q:\n%s", want, out)
		}
	}
	dls, err := b.DeadLetters(ctx, 0, 10)
	if err != nil || len(dls) != 1 {
		t.Fatalf("dead letters = %v, %v", dls, err)
	}
	first := fmt.Sprint(dls[0].DLQSequence)
	if out, err := run("dlq", "redrive", first); err != nil || !strings.Contains(out, "1 dead letter(s) redriven") {
		t.Fatalf("dlq redrive: %v\n%s", err, out)
	}
	// Taken again and refused again: a new dead letter, the first gone.
	out = waitList(1)
	dls, err = b.DeadLetters(ctx, 0, 10)
	if err != nil || len(dls) != 1 || fmt.Sprint(dls[0].DLQSequence) == first || dls[0].OriginalID != "redrive:"+first+":garbled-1" {
		t.Fatalf("after the redrive: %+v (%v), want one new dead letter of the redriven message\n%s", dls, err, out)
	}
	second := fmt.Sprint(dls[0].DLQSequence)
	if out, err := run("dlq", "redrive", first); err == nil || !strings.Contains(out, "no dead letter "+first) {
		t.Errorf("redrive of a dead letter gone: %v\n%s", err, out)
	}
	// Redriven again, it keeps the first message's id in its own.
	if out, err := run("dlq", "redrive", "--all"); err != nil || !strings.Contains(out, "1 dead letter(s) redriven") {
		t.Fatalf("dlq redrive --all: %v\n%s", err, out)
	}
	if out = waitList(1); !strings.Contains(out, "redrive:"+second+":garbled-1") {
		t.Errorf("after the second redrive:\n%s", out)
	}
	if out, err := run("dlq", "discard"); err == nil || !strings.Contains(out, "--all") {
		t.Errorf("discard of nothing named: %v\n%s", err, out)
	}
	if out, err := run("dlq", "discard", "--all"); err != nil || !strings.Contains(out, "1 dead letter(s) discarded") {
		t.Errorf("dlq discard --all: %v\n%s", err, out)
	}
	waitList(0)
	if err := p.stop(t, os.Interrupt); err != nil {
		t.Fatalf("up exited with %v", err)
	}
}

// TestBenchCPUProfile: `sysops bench outbox` prints its setup and figures,
// and --cpuprofile leaves a profile that pprof can read; a profile path
// that cannot be written is refused before the bench runs.
func TestBenchCPUProfile(t *testing.T) {
	prof := filepath.Join(t.TempDir(), "cpu.prof")
	out, err := exec.Command(binary, "bench", "outbox", "--phases", "drain", "--backlog", "2000", "--cpuprofile", prof).CombinedOutput()
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "drain") || !strings.Contains(string(out), "events/s") {
		t.Errorf("bench printed no drain figure:\n%s", out)
	}
	top, err := exec.Command("go", "tool", "pprof", "-top", binary, prof).CombinedOutput()
	if err != nil || !strings.Contains(string(top), "Type: cpu") {
		t.Errorf("pprof cannot read the profile: %v\n%s", err, top)
	}
	out, err = exec.Command(binary, "bench", "outbox", "--phases", "drain", "--cpuprofile", filepath.Join(t.TempDir(), "no", "such", "dir", "p")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--cpuprofile") {
		t.Errorf("unwritable profile path: err %v, output:\n%s", err, out)
	}
}

// TestPoolShare: services that share a PostgreSQL server divide two thirds
// of its connections, between 3 and 8 a pool; SQLite needs no share.
func TestPoolShare(t *testing.T) {
	if n, err := poolShare(t.Context(), "", 12); n != 0 || err != nil {
		t.Errorf("SQLite: %d, %v; want 0 (the default)", n, err)
	}
	base := sqldbtest.PostgresURL(t)
	db, err := sqldb.Open(t.Context(), base)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var limit, reserved int
	if err := db.QueryRowContext(t.Context(), `SELECT current_setting('max_connections')::int,
		current_setting('superuser_reserved_connections')::int`).Scan(&limit, &reserved); err != nil {
		t.Fatal(err)
	}
	for _, services := range []int{1, 12, 1000} {
		n, err := poolShare(t.Context(), base, services)
		if err != nil {
			t.Fatal(err)
		}
		if n < 3 || n > 8 || services*(n+1) > max(2*(limit-reserved)/3, 4*services) {
			t.Errorf("%d services on a server of %d connections: %d each", services, limit, n)
		}
	}
}
