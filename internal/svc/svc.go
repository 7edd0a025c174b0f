// Package svc holds what the Sysops Squad services share without sharing
// data: the request context (request id, actor) carried across service
// calls, the HTTP client a service uses to call a peer, the audit records
// every service emits, the replicated copy of the zip codes that ticket
// and assignment keep, and field validation with errors that name the
// field.
package svc

import (
	"context"
	"net/http"
	"regexp"

	"github.com/sysops-squad/sysops/outbox"
)

// Request headers carried from the gateway to every service a request
// reaches.
const (
	RequestIDHeader = "X-Request-Id"
	ActorHeader     = "X-Actor"
)

type ctxKey int

const (
	requestIDKey ctxKey = iota
	actorKey
	idemKey
)

var headerValue = regexp.MustCompile(`^[\x21-\x7e]{1,128}$`)

// RequestContext puts the request id (from X-Request-Id, or a new one),
// the actor (from X-Actor, or "anonymous") and the Idempotency-Key into
// the request's context, and echoes the request id on the response.
func RequestContext(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(RequestIDHeader)
		if !headerValue.MatchString(id) {
			id = outbox.NewID()
		}
		actor := r.Header.Get(ActorHeader)
		if !headerValue.MatchString(actor) {
			actor = "anonymous"
		}
		w.Header().Set(RequestIDHeader, id)
		ctx := context.WithValue(r.Context(), requestIDKey, id)
		ctx = context.WithValue(ctx, actorKey, actor)
		if k := r.Header.Get("Idempotency-Key"); k != "" && r.Method == http.MethodPost {
			ctx = context.WithValue(ctx, idemKey, k)
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// RequestID returns the request id in ctx, or "".
func RequestID(ctx context.Context) string {
	s, _ := ctx.Value(requestIDKey).(string)
	return s
}

// Actor returns who made the request in ctx, or "system".
func Actor(ctx context.Context) string {
	if s, _ := ctx.Value(actorKey).(string); s != "" {
		return s
	}
	return "system"
}

// WithActor returns ctx acting as actor (for background work).
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey, actor)
}

// IdempotencyKey returns the Idempotency-Key of the request in ctx, or "".
func IdempotencyKey(ctx context.Context) string {
	s, _ := ctx.Value(idemKey).(string)
	return s
}

// WithIdempotencyKey returns ctx whose calls to peers derive their
// Idempotency-Keys from key: a workflow that names its run (say, by the
// entity it acts on) repeats no step when it is run again.
func WithIdempotencyKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, idemKey, key)
}
