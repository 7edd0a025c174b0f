package inbox

import (
	"errors"
	"net/http"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/internal/httpx"
)

// Handler returns the consumer's operations endpoints, to be mounted
// under a prefix such as /ops/inbox:
//
//	GET  {prefix}/parked?limit=100   events waiting for a predecessor, oldest first
//	POST {prefix}/skip  {"aggregate_type":"...","aggregate_id":"..."}
//	                                 give up on the aggregate's missing events (see SkipGap)
func (c *Consumer) Handler(prefix string) http.Handler {
	logger := c.cfg.Logger
	mux := http.NewServeMux()
	mux.Handle("GET "+prefix+"/parked", httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
		q, err := httpx.Query(r, "limit")
		if err != nil {
			return err
		}
		limit, err := httpx.Limit(q, 100, 10000)
		if err != nil {
			return err
		}
		parked, err := ListParked(r.Context(), c.db, limit)
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"parked": parked})
		return nil
	}))
	mux.Handle("POST "+prefix+"/skip", httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
		var body struct {
			AggregateType string `json:"aggregate_type"`
			AggregateID   string `json:"aggregate_id"`
		}
		if err := httpx.DecodeJSON(w, r, &body); err != nil {
			return err
		}
		if body.AggregateType == "" || body.AggregateID == "" {
			return sysops.Errorf(sysops.EInvalid, "aggregate_type and aggregate_id are required")
		}
		g, err := c.SkipGap(r.Context(), body.AggregateType, body.AggregateID)
		if errors.Is(err, ErrNothingParked) {
			return sysops.Errorf(sysops.ENotFound, "consumer %s has nothing parked for %s %s", c.cfg.Name,
				body.AggregateType, body.AggregateID)
		}
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, g)
		return nil
	}))
	return mux
}
