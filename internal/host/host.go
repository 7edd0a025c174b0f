// Package host runs one Sysops Squad service: it opens the service's own
// database and runs its migrations, connects to the broker and sets up the
// service's streams, then serves the service's HTTP API on its own address
// next to GET /healthz (the process is alive), GET /readyz (its database
// and the broker answer) and the outbox's operations endpoints under
// /ops/outbox: every service has an outbox in its own database and a relay
// publishing it. `sysops up` hosts every service this way in one
// process, `sysops serve` one service per process; either way services
// reach each other only over HTTP and NATS.
package host

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/idempotency"
	"github.com/sysops-squad/sysops/internal/httpx"
	"github.com/sysops-squad/sysops/internal/svc"
	"github.com/sysops-squad/sysops/natsjs"
	"github.com/sysops-squad/sysops/outbox"
	"github.com/sysops-squad/sysops/sqldb"
)

// Spec describes a service to the host.
type Spec struct {
	// Name is the service's name: its database, its stream and its entry
	// in the topology are named after it.
	Name string
	// Migrations are the service's embedded goose migrations (see
	// [sqldb.Migrate]); nil if it has none.
	Migrations fs.FS
	// Streams are ensured on the broker before the service starts.
	Streams []natsjs.StreamSpec
	// Start builds the service once its database and broker are ready. Work
	// it starts in the background must stop when ctx ends.
	Start func(ctx context.Context, deps Deps) (http.Handler, error)
	// TransactionalKeys says that every write of the service's POST
	// handlers runs with sqldb.RunInScope, and that the handlers call no
	// other service after writing: the Idempotency-Key of a request is then
	// recorded in the request's own transaction (idempotency.Config's
	// Transactional), so that no crash leaves an effect without its key.
	TransactionalKeys bool
}

// Deps is what a service gets from its host.
type Deps struct {
	DB     *sqldb.DB
	Broker *natsjs.Broker
	Logger *slog.Logger
	// Peers finds other services' base URLs.
	Peers svc.Peers
	// URL is the service's own base URL.
	URL string
}

// Config configures [Start].
type Config struct {
	Spec Spec
	// DatabaseURL is the service's own database (see [sqldb.Provision]).
	DatabaseURL string
	// NATSURL is the broker.
	NATSURL string
	// Addr is the address to listen on, host:port; port 0 picks one.
	Addr string
	// Listener, if set, is used instead of listening on Addr: a caller
	// that starts several services listens first, so that every address
	// is known (and every conflict found) before any service starts.
	Listener net.Listener
	// Peers maps other services' names to their base URLs, unless
	// LivePeers is given: a table the caller keeps up to date.
	Peers     map[string]string
	LivePeers svc.Peers
	Logger    *slog.Logger
	// MaxConns caps the service's database connections (PostgreSQL's
	// pool; SQLite's read pool). 0: sqldb's default. Services that share a
	// server divide its max_connections between them.
	MaxConns int
	// NATSReplicas is the replica count of the streams the service
	// creates. 0: chosen from the server ([natsjs.Config.Replicas]).
	NATSReplicas int
}

// Host is a running service.
type Host struct {
	name   string
	url    string
	dbURL  string
	srv    *http.Server
	db     *sqldb.DB
	broker *natsjs.Broker
	relay  *outbox.Relay
	cancel context.CancelFunc
	served chan error

	closeOnce sync.Once
}

// Start brings the service up and serves it in the background. Any failure
// — database unreachable, a migration failing, broker down, address in use
// — is returned as one line naming the service and the problem, and
// everything opened so far is closed.
func Start(ctx context.Context, cfg Config) (h *Host, err error) {
	spec := cfg.Spec
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("service", spec.Name)
	fail := func(format string, args ...any) error {
		return fmt.Errorf(spec.Name+": "+format, args...)
	}

	db, err := sqldb.Open(ctx, cfg.DatabaseURL, sqldb.Options{MaxReaders: cfg.MaxConns})
	if err != nil {
		return nil, fail("%w", err)
	}
	defer func() {
		if err != nil {
			db.Close()
		}
	}()
	// Every service publishes through its own outbox, and honours
	// Idempotency-Key on its POSTs.
	type migrationSet struct {
		name string
		fsys fs.FS
	}
	sets := []migrationSet{{outbox.MigrationSet, outbox.Migrations()}, {idempotency.MigrationSet, idempotency.Migrations()}}
	if spec.Migrations != nil {
		sets = append(sets, migrationSet{spec.Name, spec.Migrations})
	}
	for _, set := range sets {
		res, err := sqldb.Migrate(ctx, db, set.name, set.fsys)
		if err != nil {
			return nil, fail("%w", err)
		}
		if len(res.Applied) > 0 {
			logger.InfoContext(ctx, "migrated", "set", set.name, "applied", res.Applied, "version", res.Version)
		}
		if res.Ahead() {
			logger.WarnContext(ctx, "schema newer than this build: a newer build migrated it; running on it",
				"set", set.name, "version", res.Version, "build", res.Latest)
		}
	}

	broker, err := natsjs.Connect(ctx, natsjs.Config{URL: cfg.NATSURL, Name: spec.Name, Logger: logger, Replicas: cfg.NATSReplicas})
	if err != nil {
		return nil, fail("%w", err)
	}
	defer func() {
		if err != nil {
			broker.Close()
		}
	}()
	if err := broker.EnsureDeadLetterStream(ctx); err != nil {
		return nil, fail("%w", err)
	}
	// Every service may queue audit records, even while audit is down.
	for _, s := range append([]natsjs.StreamSpec{svc.AuditStream()}, spec.Streams...) {
		if err := broker.EnsureStream(ctx, s); err != nil {
			return nil, fail("%w", err)
		}
	}

	ln := cfg.Listener
	if ln == nil {
		if ln, err = Listen(spec.Name, cfg.Addr); err != nil {
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			ln.Close()
		}
	}()

	// The service's context outlives ctx, which bounds only the start;
	// until the start is over, ending ctx ends it too, so that a start
	// stuck on a database that does not answer can be interrupted (Ctrl-C
	// or SIGTERM during sysops up used to wait for ever).
	svcCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	detach := context.AfterFunc(ctx, cancel)
	relay, err := outbox.NewRelay(db, broker, outbox.RelayConfig{Logger: logger})
	if err != nil {
		cancel()
		return nil, fail("%w", err)
	}
	if err := relay.Start(svcCtx); err != nil {
		cancel()
		return nil, fail("%w", err)
	}
	peers := cfg.LivePeers
	if peers == (svc.Peers{}) {
		peers = svc.NewPeers(cfg.Peers)
	}
	handler, err := spec.Start(svcCtx, Deps{DB: db, Broker: broker, Logger: logger, Peers: peers, URL: "http://" + ln.Addr().String()})
	if err == nil && !detach() {
		err = fmt.Errorf("interrupted: %w", context.Cause(ctx))
	}
	if err != nil {
		relay.Stop()
		cancel()
		return nil, fail("start: %w", err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok", "service": spec.Name})
	})
	mux.Handle("GET /readyz", httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
		return ready(r.Context(), w, spec.Name, db, broker)
	}))
	ops := outbox.Handler("/ops/outbox", db, logger)
	mux.Handle("/ops/outbox", ops)
	mux.Handle("/ops/outbox/", ops)
	idem := idempotency.New(db, idempotency.Config{Logger: logger, Transactional: spec.TransactionalKeys})
	go idem.RunPruner(svcCtx, time.Hour)
	mux.Handle("/", idem.Middleware(handler))
	if b, ok := handler.(interface {
		BatchRoutes() map[string]idempotency.BatchFunc
	}); ok && len(b.BatchRoutes()) > 0 {
		mux.Handle(idempotency.BatchPath, idem.BatchHandler(b.BatchRoutes()))
	}

	h = &Host{
		name:   spec.Name,
		url:    "http://" + ln.Addr().String(),
		dbURL:  db.URL(),
		db:     db,
		broker: broker,
		relay:  relay,
		cancel: cancel,
		served: make(chan error, 1),
		srv: &http.Server{
			Handler:           svc.RequestContext(httpx.Canonical(mux)),
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		},
	}
	go func() { h.served <- h.srv.Serve(ln) }()
	return h, nil
}

func ready(ctx context.Context, w http.ResponseWriter, name string, db *sqldb.DB, broker *natsjs.Broker) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	checks := map[string]string{}
	var problems []error
	if err := db.PingContext(ctx); err != nil {
		checks["database"] = err.Error()
		problems = append(problems, fmt.Errorf("database: %w", err))
	} else {
		checks["database"] = "ok"
	}
	if err := broker.Ping(ctx); err != nil {
		checks["broker"] = err.Error()
		problems = append(problems, fmt.Errorf("broker: %w", err))
	} else {
		checks["broker"] = "ok"
	}
	if len(problems) > 0 {
		return sysops.Errorf(sysops.EUnavailable, "%s not ready: %v", name, errors.Join(problems...))
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"status": "ready", "service": name, "checks": checks})
	return nil
}

// Listen listens on addr for the named service, reporting a failure (an
// address in use, say) in one line that names both.
func Listen(service, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: listen %s: %w", service, addr, listenCause(err))
	}
	return ln, nil
}

func listenCause(err error) error {
	if op, ok := errors.AsType[*net.OpError](err); ok && op.Err != nil {
		if inner := errors.Unwrap(op.Err); inner != nil {
			return inner // "address already in use", without the syscall name
		}
		return op.Err
	}
	return err
}

// Name returns the service's name.
func (h *Host) Name() string { return h.name }

// URL returns the base URL the service answers on.
func (h *Host) URL() string { return h.url }

// DatabaseURL returns the service's database URL, password removed.
func (h *Host) DatabaseURL() string { return h.dbURL }

// StreamReplicas returns the replica count of the service's streams.
func (h *Host) StreamReplicas() int { return h.broker.Replicas() }

// Done delivers the error that stopped the server, if it stops on its own.
func (h *Host) Done() <-chan error { return h.served }

// Shutdown stops accepting requests, waits for those in flight until ctx
// ends, stops the service's background work, and closes its broker
// connection and database.
func (h *Host) Shutdown(ctx context.Context) error {
	var err error
	h.closeOnce.Do(func() {
		err = h.srv.Shutdown(ctx)
		h.relay.Stop()
		h.cancel()
		h.broker.Close()
		err = errors.Join(err, h.db.Close())
	})
	return err
}
