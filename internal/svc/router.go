package svc

import (
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/idempotency"
	"github.com/sysops-squad/sysops/internal/httpx"
)

// Router is an http.ServeMux whose handlers return errors, and whose own
// answers — no route, method not allowed — are JSON errors like the rest.
type Router struct {
	mux     *http.ServeMux
	logger  *slog.Logger
	batched map[string]idempotency.BatchFunc
}

// NewRouter returns an empty router.
func NewRouter(logger *slog.Logger) *Router {
	return &Router{mux: http.NewServeMux(), logger: logger}
}

// Handle routes pattern ("POST /customers/{id}", say) to fn. The route
// takes the query parameters named in params and answers any other, or
// one given twice, with a 400 naming it ([httpx.Query]): a mistyped filter
// is an error, not an unfiltered answer.
func (rt *Router) Handle(pattern string, fn httpx.HandlerFunc, params ...string) {
	rt.mux.Handle(pattern, httpx.Handle(rt.logger, func(w http.ResponseWriter, r *http.Request) error {
		if _, err := httpx.Query(r, params...); err != nil {
			return err
		}
		return fn(w, r)
	}))
}

// HandleForward routes pattern to fn, which passes the query string on to
// the service that answers; that service checks it.
func (rt *Router) HandleForward(pattern string, fn httpx.HandlerFunc) {
	rt.mux.Handle(pattern, httpx.Handle(rt.logger, fn))
}

// HandleBatch lets calls of the POST route pattern also come in batches
// (POST /batch, see [idempotency.Store.BatchHandler]), applied by fn.
// The route itself is registered with Handle as usual.
func (rt *Router) HandleBatch(pattern string, fn idempotency.BatchFunc) {
	if rt.batched == nil {
		rt.batched = map[string]idempotency.BatchFunc{}
	}
	rt.batched[pattern] = fn
}

// BatchRoutes returns the routes registered with HandleBatch; the host
// serves them at POST /batch.
func (rt *Router) BatchRoutes() map[string]idempotency.BatchFunc { return rt.batched }

// HandleHTTP routes pattern to a plain handler.
func (rt *Router) HandleHTTP(pattern string, h http.Handler) { rt.mux.Handle(pattern, h) }

func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h, pattern := rt.mux.Handler(r)
	if pattern != "" {
		rt.mux.ServeHTTP(w, r)
		return
	}
	probe := &statusProbe{header: http.Header{}}
	h.ServeHTTP(probe, r)
	if probe.status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", probe.header.Get("Allow"))
		httpx.WriteJSON(w, http.StatusMethodNotAllowed, httpx.ErrorBody{Error: sysops.Error{Code: sysops.EInvalid,
			Message: fmt.Sprintf("method %s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, probe.header.Get("Allow"))}})
		return
	}
	httpx.NoRoute(w, r)
}

// statusProbe learns what the mux would answer without writing it.
type statusProbe struct {
	header http.Header
	status int
}

func (p *statusProbe) Header() http.Header         { return p.header }
func (p *statusProbe) Write(b []byte) (int, error) { return len(b), nil }
func (p *statusProbe) WriteHeader(status int)      { p.status = status }

// Micros is t as microseconds since the Unix epoch, the services' stored
// time format.
func Micros(t time.Time) int64 { return t.UnixMicro() }

// FromMicros is the inverse of [Micros], in UTC.
func FromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }
