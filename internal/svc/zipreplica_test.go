package svc_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/internal/svc"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

// fakeLocation serves GET /zipcodes with an ETag, like the location
// service; set replaces its zip codes and ETag.
type fakeLocation struct {
	mu   sync.Mutex
	etag string
	zips []svc.Zip
}

func (f *fakeLocation) set(etag string, zips ...svc.Zip) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.etag, f.zips = etag, zips
}

func (f *fakeLocation) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Header.Get("If-None-Match") == f.etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("ETag", f.etag)
	_ = json.NewEncoder(w).Encode(map[string]any{"zipcodes": f.zips})
}

// TestZipReplicaServesItsCopy: lookups come from the copy; a refresh that
// changes it is seen at once by the instance that made it, and a zip the
// copy lacks is reported as unknown, or as not yet copied while the copy
// is empty.
func TestZipReplicaServesItsCopy(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := sqldbtest.Open(t, d)
		if _, err := sqldb.Migrate(ctx, db, svc.ZipReplicaMigrationSet, svc.ZipReplicaMigrations()); err != nil {
			t.Fatal(err)
		}
		loc := &fakeLocation{}
		srv := httptest.NewServer(loc)
		defer srv.Close()
		z := svc.NewZipReplica(db, svc.NewPeers(map[string]string{"location": srv.URL}), nil)

		if _, err := z.Lookup(ctx, "10001"); sysops.CodeOf(err) != sysops.EUnavailable {
			t.Errorf("lookup before any copy: %v, want unavailable", err)
		}
		nyc := svc.Zip{Zip: "10001", City: "New York", State: "NY", Latitude: 40.75, Longitude: -73.99}
		loc.set(`"v1"`, nyc)
		if changed, err := z.Refresh(ctx); err != nil || !changed {
			t.Fatalf("refresh = %v, %v", changed, err)
		}
		if got, err := z.Lookup(ctx, "10001"); err != nil || got != nyc {
			t.Errorf("lookup = %+v, %v", got, err)
		}
		if _, err := z.Lookup(ctx, "60601"); sysops.CodeOf(err) != sysops.EInvalid {
			t.Errorf("lookup of a zip the copy lacks: %v, want invalid", err)
		}

		chicago := svc.Zip{Zip: "60601", City: "Chicago", State: "IL", Latitude: 41.88, Longitude: -87.62}
		loc.set(`"v2"`, nyc, chicago)
		if changed, err := z.Refresh(ctx); err != nil || !changed {
			t.Fatalf("second refresh = %v, %v", changed, err)
		}
		if got, err := z.Lookup(ctx, "60601"); err != nil || got != chicago {
			t.Errorf("lookup after the refresh = %+v, %v; want the new zip at once", got, err)
		}
		all, err := z.All(ctx)
		if err != nil || len(all) != 2 || all["60601"] != chicago {
			t.Errorf("all = %v, %v", all, err)
		}
		if changed, err := z.Refresh(ctx); err != nil || changed {
			t.Errorf("refresh with nothing new = %v, %v", changed, err)
		}
	})
}

// TestZipReplicaKeepsItsCopyOnABadAnswer: an answer that is not a list of
// zip codes (another service answering at location's address, say) or
// that holds a bad one is refused, and the copy is kept rather than
// replaced by nothing.
func TestZipReplicaKeepsItsCopyOnABadAnswer(t *testing.T) {
	ctx := context.Background()
	db := sqldbtest.Open(t, sqldb.SQLite)
	if _, err := sqldb.Migrate(ctx, db, svc.ZipReplicaMigrationSet, svc.ZipReplicaMigrations()); err != nil {
		t.Fatal(err)
	}
	answer := `{"zipcodes":[{"zip":"10001","city":"New York","state":"NY","latitude":40.75,"longitude":-73.99}]}`
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		_, _ = w.Write([]byte(answer))
	}))
	defer srv.Close()
	z := svc.NewZipReplica(db, svc.NewPeers(map[string]string{"location": srv.URL}), nil)
	if _, err := z.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{
		`{"customers":[]}`,
		`{"zipcodes":null}`,
		`{"zipcodes":[{"zip":""}]}`,
		`{"zipcodes":[{"zip":"1"},{"zip":"1"}]}`,
		`{"zipcodes":[{"zip":"2","latitude":123}]}`,
	} {
		mu.Lock()
		answer = bad
		mu.Unlock()
		if changed, err := z.Refresh(ctx); err == nil || changed {
			t.Errorf("refresh with %s: %v, %v; want an error", bad, changed, err)
		}
		if n, err := z.Len(ctx); err != nil || n != 1 {
			t.Errorf("after %s the copy holds %d (%v), want the 1 it had", bad, n, err)
		}
	}
	mu.Lock()
	answer = `{"zipcodes":[]}`
	mu.Unlock()
	if _, err := z.Refresh(ctx); err != nil {
		t.Errorf("an empty list is location's answer to take: %v", err)
	}
}
