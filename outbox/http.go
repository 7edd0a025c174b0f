package outbox

import (
	"log/slog"
	"net/http"

	"github.com/sysops-squad/sysops/internal/httpx"
	"github.com/sysops-squad/sysops/sqldb"
)

// Handler returns the outbox's operations endpoints, to be mounted under
// a prefix such as /ops/outbox:
//
//	GET  {prefix}?status=dead&limit=100   rows in one state (default dead)
//	GET  {prefix}/stats                   counts per state and the relay's lag
//	POST {prefix}/retry  {"seqs":[...]}   dead rows back to pending (all if seqs is empty)
//	POST {prefix}/purge  {"seqs":[...]}   delete dead rows (all if seqs is empty)
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
	action := func(fn func(r *http.Request, seqs []int64) (int64, error), verb string) http.Handler {
		return httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
			var body struct {
				Seqs []int64 `json:"seqs"`
			}
			if r.ContentLength != 0 {
				if err := httpx.DecodeJSON(w, r, &body); err != nil {
					return err
				}
			}
			n, err := fn(r, body.Seqs)
			if err != nil {
				return err
			}
			httpx.WriteJSON(w, http.StatusOK, map[string]int64{verb: n})
			return nil
		})
	}
	mux.Handle("POST "+prefix+"/retry", action(func(r *http.Request, seqs []int64) (int64, error) {
		return Retry(r.Context(), db, seqs...)
	}, "retried"))
	mux.Handle("POST "+prefix+"/purge", action(func(r *http.Request, seqs []int64) (int64, error) {
		return Purge(r.Context(), db, seqs...)
	}, "purged"))
	return mux
}
