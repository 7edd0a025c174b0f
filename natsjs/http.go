package natsjs

import (
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/internal/httpx"
)

// DeadLetterHandler returns the dead-letter stream's operations
// endpoints, mounted under prefix (such as /ops/dlq):
//
//	GET  {prefix}?after=SEQ&limit=N   dead letters, oldest first
//	POST {prefix}/{seq}/redrive       send one back to its subject (see Redrive)
//	POST {prefix}/{seq}/discard       drop one for good
//
// A dead letter that is not there is a 404; a sequence that is not a
// positive whole number, a 400.
func (b *Broker) DeadLetterHandler(prefix string, logger *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET "+prefix, httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
		q, err := httpx.Query(r, "after", "limit")
		if err != nil {
			return err
		}
		limit, err := httpx.Limit(q, 100, 1000)
		if err != nil {
			return err
		}
		var after uint64
		if v := q.Get("after"); v != "" {
			if after, err = strconv.ParseUint(v, 10, 64); err != nil {
				return sysops.Errorf(sysops.EInvalid, "query parameter \"after\": %q is not a dead letter's sequence", v)
			}
		}
		dls, err := b.DeadLetters(r.Context(), after, limit)
		if err != nil {
			return sysops.Errorf(sysops.EUnavailable, "%v", err)
		}
		out := make([]deadLetterJSON, len(dls))
		for i, dl := range dls {
			out[i] = jsonOf(dl)
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"dead_letters": out})
		return nil
	}))
	act := func(name string, fn func(r *http.Request, seq uint64) (any, error)) {
		mux.Handle("POST "+prefix+"/{seq}/"+name, httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
			seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
			if err != nil || seq == 0 {
				return sysops.Errorf(sysops.EInvalid, "%q is not a dead letter's sequence", r.PathValue("seq"))
			}
			out, err := fn(r, seq)
			switch {
			case errors.Is(err, ErrNoDeadLetter):
				return sysops.Errorf(sysops.ENotFound, "%v", err)
			case err != nil:
				return sysops.Errorf(sysops.EUnavailable, "%v", err)
			}
			httpx.WriteJSON(w, http.StatusOK, out)
			return nil
		}))
	}
	act("redrive", func(r *http.Request, seq uint64) (any, error) {
		dl, err := b.Redrive(r.Context(), seq)
		return map[string]any{"redriven": jsonOf(dl)}, err
	})
	act("discard", func(r *http.Request, seq uint64) (any, error) {
		return map[string]any{"discarded": seq}, b.DiscardDeadLetter(r.Context(), seq)
	})
	// Anything else gets a JSON error like the rest, not the mux's text.
	unknown := httpx.Handle(logger, func(w http.ResponseWriter, r *http.Request) error {
		return sysops.Errorf(sysops.ENotFound, "no %s %s: the dead-letter endpoints are GET %s, POST %s/{seq}/redrive and POST %s/{seq}/discard",
			r.Method, r.URL.Path, prefix, prefix, prefix)
	})
	mux.Handle(prefix, unknown)
	mux.Handle(prefix+"/", unknown)
	return mux
}

// deadLetterJSON is a dead letter as the endpoints show it.
type deadLetterJSON struct {
	Seq        uint64 `json:"seq"`
	Time       string `json:"time"`
	Consumer   string `json:"consumer"`
	Subject    string `json:"subject"`
	Stream     string `json:"stream"`
	Sequence   uint64 `json:"stream_sequence"`
	ID         string `json:"id"`
	Deliveries int    `json:"deliveries"`
	Reason     string `json:"reason"`
	Data       string `json:"data"`
}

func jsonOf(dl DeadLetter) deadLetterJSON {
	return deadLetterJSON{Seq: dl.DLQSequence, Time: dl.Time.UTC().Format("2006-01-02T15:04:05.999999Z07:00"),
		Consumer: dl.Consumer, Subject: dl.Subject, Stream: dl.Stream, Sequence: dl.Sequence, ID: dl.OriginalID,
		Deliveries: dl.Deliveries, Reason: dl.Reason, Data: string(dl.Data)}
}
