// Package svctest runs Sysops Squad services for tests, for real: each
// with its own database of the dialect under test, an embedded JetStream
// server, loopback HTTP, and the peers' addresses known to all of them.
package svctest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sysops-squad/sysops/internal/host"
	"github.com/sysops-squad/sysops/natsjs"
	"github.com/sysops-squad/sysops/natsjs/brokertest"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

// Env is a set of services under test.
type Env struct {
	t       *testing.T
	dialect sqldb.Dialect
	NATS    *natsjs.Server
	specs   map[string]host.Spec
	dbURLs  map[string]string
	addrs   map[string]string
	peers   map[string]string
	hosts   map[string]*host.Host
}

// New starts the services of specs, in order, each with a fresh database
// of dialect d; they are stopped when the test ends.
func New(t *testing.T, d sqldb.Dialect, specs ...host.Spec) *Env {
	t.Helper()
	return newEnv(t, d, func(string) string { return sqldbtest.URL(t, d) }, specs...)
}

// NewRefusing is [New] on PostgreSQL whose first service's database can
// be made to refuse writes, as one demoted in a failover does:
// refuse(true) until refuse(false) (see [sqldbtest.RefusingURL]).
func NewRefusing(t *testing.T, specs ...host.Spec) (env *Env, refuse func(bool)) {
	t.Helper()
	raw, refuse := sqldbtest.RefusingURL(t)
	first := specs[0].Name
	return newEnv(t, sqldb.Postgres, func(name string) string {
		if name == first {
			return raw
		}
		return sqldbtest.URL(t, sqldb.Postgres)
	}, specs...), refuse
}

func newEnv(t *testing.T, d sqldb.Dialect, dbURL func(service string) string, specs ...host.Spec) *Env {
	t.Helper()
	e := &Env{t: t, dialect: d, NATS: brokertest.RunServer(t), specs: map[string]host.Spec{},
		dbURLs: map[string]string{}, addrs: map[string]string{}, peers: map[string]string{}, hosts: map[string]*host.Host{}}
	lns := map[string]net.Listener{}
	for _, s := range specs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[s.Name] = ln
		e.specs[s.Name] = s
		e.addrs[s.Name] = ln.Addr().String()
		e.peers[s.Name] = "http://" + ln.Addr().String()
		e.dbURLs[s.Name] = dbURL(s.Name)
	}
	for _, s := range specs {
		e.start(s.Name, lns[s.Name])
	}
	t.Cleanup(func() {
		for name := range e.hosts {
			e.Stop(name)
		}
	})
	return e
}

func (e *Env) start(name string, ln net.Listener) {
	e.t.Helper()
	peers := map[string]string{}
	for n, u := range e.peers {
		if n != name {
			peers[n] = u
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := host.Start(ctx, host.Config{Spec: e.specs[name], DatabaseURL: e.dbURLs[name], NATSURL: e.NATS.ClientURL(),
		Listener: ln, Peers: peers, Logger: testLogger()})
	if err != nil {
		e.t.Fatal(err)
	}
	e.hosts[name] = h
}

// URL returns a service's base URL.
func (e *Env) URL(name string) string { return e.peers[name] }

// DatabaseURL returns a service's database URL.
func (e *Env) DatabaseURL(name string) string { return e.dbURLs[name] }

// Peers returns every service's base URL.
func (e *Env) Peers() map[string]string { return e.peers }

// Stop shuts a service down; its address stays reserved for [Env.Restart].
func (e *Env) Stop(name string) {
	e.t.Helper()
	h, ok := e.hosts[name]
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.Shutdown(ctx); err != nil {
		e.t.Errorf("stop %s: %v", name, err)
	}
	delete(e.hosts, name)
}

// Restart starts a stopped service again on its address and database.
func (e *Env) Restart(name string) {
	e.t.Helper()
	var ln net.Listener
	var err error
	for range 50 { // the old socket may linger for a moment
		if ln, err = net.Listen("tcp", e.addrs[name]); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	e.start(name, ln)
}

// Response is a decoded HTTP answer.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into a generic map.
func (r Response) JSON(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", r.Body, err)
	}
	return m
}

// Decode decodes the body into v.
func (r Response) Decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("body %q: %v", r.Body, err)
	}
}

// ErrorMessage returns the message of a JSON error body, or "".
func (r Response) ErrorMessage() string {
	var eb struct {
		Error struct{ Message string } `json:"error"`
	}
	_ = json.Unmarshal(r.Body, &eb)
	return eb.Error.Message
}

// Do sends a request; body is JSON-encoded unless it is a string or
// []byte, sent as is. Headers come in name, value pairs.
func Do(t testing.TB, method, url string, body any, headers ...string) Response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewReader([]byte(b))
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// Eventually retries cond every 20 ms until it holds or 20 s pass.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WantError fails the test unless r is a JSON error with the given status
// whose message contains every one of words.
func WantError(t testing.TB, what string, r Response, status int, words ...string) {
	t.Helper()
	msg := r.ErrorMessage()
	if r.Status != status || msg == "" {
		t.Errorf("%s: status %d body %s; want %d with a JSON error", what, r.Status, r.Body, status)
		return
	}
	for _, w := range words {
		if !strings.Contains(msg, w) {
			t.Errorf("%s: error %q does not mention %q", what, msg, w)
		}
	}
}

// testLogger logs the services' warnings and errors to stderr when
// SVCTEST_LOG is set (for debugging a test), and nothing otherwise.
func testLogger() *slog.Logger {
	if os.Getenv("SVCTEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}
