package location

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/internal/httpx"
)

// Handler returns the service's HTTP API:
//
//	GET /zipcodes/{zip}          one zip code
//	GET /zipcodes?near=Z&km=N    zip codes within N km of Z, nearest first
//	GET /zipcodes                every zip code, with an ETag; If-None-Match answers 304
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /zipcodes/{zip}", httpx.Handle(s.logger, s.handleGet))
	mux.Handle("GET /zipcodes", httpx.Handle(s.logger, s.handleList))
	mux.HandleFunc("/", httpx.NoRoute)
	return mux
}

func (s *Service) handleGet(w http.ResponseWriter, r *http.Request) error {
	if _, err := httpx.Query(r); err != nil {
		return err
	}
	z, err := s.Get(r.Context(), r.PathValue("zip"))
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, z)
	return nil
}

func (s *Service) handleList(w http.ResponseWriter, r *http.Request) error {
	q, err := httpx.Query(r, "near", "km")
	if err != nil {
		return err
	}
	if q.Has("near") || q.Has("km") {
		near, kmText := q.Get("near"), q.Get("km")
		if near == "" {
			return sysops.Errorf(sysops.EInvalid, "query parameter near is required with km")
		}
		km := 25.0
		if kmText != "" {
			var err error
			if km, err = strconv.ParseFloat(kmText, 64); err != nil {
				return sysops.Errorf(sysops.EInvalid, "query parameter km must be a number, not %q", kmText)
			}
		}
		zips, err := s.Near(r.Context(), near, km)
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"near": near, "km": km, "zipcodes": zips})
		return nil
	}
	zips, err := s.List(r.Context())
	if err != nil {
		return err
	}
	body, err := json.Marshal(map[string]any{"zipcodes": zips})
	if err != nil {
		return err
	}
	sum := sha256.Sum256(body)
	etag := `"` + hex.EncodeToString(sum[:12]) + `"`
	w.Header().Set("ETag", etag)
	w.Header().Set("Cache-Control", "no-cache")
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(body, '\n'))
	return nil
}
