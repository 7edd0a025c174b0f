package outbox

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/internal/httpx"
	"github.com/sysops-squad/sysops/sqldb"
)

// Handler returns the outbox's operations endpoints, to be mounted under
// a prefix such as /ops/outbox:
//
//	GET  {prefix}?status=dead&limit=100   rows in one state (default dead)
//	GET  {prefix}/stats                   counts per state and the relay's lag
//	POST {prefix}/retry  {"seqs":[...]} or {"all":true}   dead rows back to pending
//	POST {prefix}/purge  {"seqs":[...]} or {"all":true}   delete dead rows
//
// An action with neither is a 400: an empty body never means every row.
func Handler(prefix string, db *sqldb.DB, logger *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET "+prefix, httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
		q, err := httpx.Query(r, "status", "limit")
		if err != nil {
			return err
		}
		opts := ListOptions{Status: Status(q.Get("status"))}
		if opts.Limit, err = httpx.Limit(q, 0, 10000); err != nil {
			return err
		}
		rows, err := List(r.Context(), db, opts)
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"rows": rows})
		return nil
	}))
	mux.Handle("GET "+prefix+"/stats", httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
		if _, err := httpx.Query(r); err != nil {
			return err
		}
		s, err := GetStats(r.Context(), db)
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, s)
		return nil
	}))
	// An action names its rows, or asks for all of them in so many words:
	// a POST with an empty body must not purge every dead row.
	action := func(verb, done string, some func(context.Context, *sqldb.DB, ...int64) (int64, error),
		all func(context.Context, *sqldb.DB) (int64, error)) http.Handler {
		return httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
			if _, err := httpx.Query(r); err != nil {
				return err
			}
			var body struct {
				Seqs []int64 `json:"seqs"`
				All  bool    `json:"all"`
			}
			if r.ContentLength != 0 {
				if err := httpx.DecodeJSON(w, r, &body); err != nil {
					return err
				}
			}
			var n int64
			var err error
			switch {
			case body.All && len(body.Seqs) > 0:
				return sysops.Errorf(sysops.EInvalid, `give "seqs" or "all", not both`)
			case body.All:
				n, err = all(r.Context(), db)
			case len(body.Seqs) > 0:
				n, err = some(r.Context(), db, body.Seqs...)
			default:
				return sysops.Errorf(sysops.EInvalid, `name the dead rows to %s: {"seqs":[...]}, or {"all":true} for every one`, verb)
			}
			if err != nil {
				return err
			}
			httpx.WriteJSON(w, http.StatusOK, map[string]int64{done: n})
			return nil
		})
	}
	mux.Handle("POST "+prefix+"/retry", action("retry", "retried", Retry, RetryAll))
	mux.Handle("POST "+prefix+"/purge", action("purge", "purged", Purge, PurgeAll))
	return mux
}
