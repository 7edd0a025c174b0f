package location_test

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/sysops-squad/sysops/services/location"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

func newService(t *testing.T, d sqldb.Dialect) (*location.Service, *sqldb.DB) {
	t.Helper()
	db := sqldbtest.Open(t, d)
	if _, err := sqldb.Migrate(context.Background(), db, location.Name, location.Migrations()); err != nil {
		t.Fatal(err)
	}
	s := location.New(db, nil)
	if err := s.Seed(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s, db
}

func TestDataset(t *testing.T) {
	zips, err := location.Dataset()
	if err != nil {
		t.Fatal(err)
	}
	if len(zips) < 300 {
		t.Errorf("dataset has %d zip codes, want a few hundred", len(zips))
	}
	seen := map[string]bool{}
	for _, z := range zips {
		if seen[z.Zip] {
			t.Errorf("zip %s appears twice", z.Zip)
		}
		seen[z.Zip] = true
	}
}

func TestDistance(t *testing.T) {
	nyc := location.ZipCode{Latitude: 40.7506, Longitude: -73.9972}
	la := location.ZipCode{Latitude: 34.0614, Longitude: -118.2385}
	if d := location.DistanceKM(nyc, la); math.Abs(d-3940) > 30 {
		t.Errorf("New York to Los Angeles = %.0f km, want about 3940", d)
	}
	if d := location.DistanceKM(nyc, nyc); d != 0 {
		t.Errorf("distance to itself = %v", d)
	}
}

func TestSeed(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		s, db := newService(t, d)
		all, err := s.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := location.Dataset()
		if len(all) != len(want) {
			t.Fatalf("seeded %d rows, want %d", len(all), len(want))
		}
		// An operator's row survives a new version of the data file.
		if _, err := db.ExecContext(ctx, `INSERT INTO zip_code VALUES ('99950', 'Ketchikan', 'AK', 55.34, -131.64)`); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, `UPDATE dataset SET version = 'older'`); err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, `UPDATE zip_code SET city = 'Gotham' WHERE zip = '10001'`); err != nil {
			t.Fatal(err)
		}
		if err := s.Seed(ctx); err != nil {
			t.Fatal(err)
		}
		if z, err := s.Get(ctx, "99950"); err != nil || z.City != "Ketchikan" {
			t.Errorf("operator row after reseed = %+v, %v", z, err)
		}
		if z, err := s.Get(ctx, "10001"); err != nil || z.City != "New York" {
			t.Errorf("10001 after reseed = %+v, %v; want the data file's city back", z, err)
		}
		var version string
		if err := db.QueryRowContext(ctx, `SELECT version FROM dataset`).Scan(&version); err != nil || version != location.DatasetVersion() {
			t.Errorf("dataset version = %q, %v; want %q", version, err, location.DatasetVersion())
		}
	})
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func TestHTTP(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		s, _ := newService(t, d)
		srv := httptest.NewServer(s.Handler())
		defer srv.Close()

		get := func(t *testing.T, path string, header ...string) (*http.Response, []byte) {
			t.Helper()
			req, _ := http.NewRequest("GET", srv.URL+path, nil)
			for i := 0; i+1 < len(header); i += 2 {
				req.Header.Set(header[i], header[i+1])
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			return resp, b
		}

		t.Run("get", func(t *testing.T) {
			resp, body := get(t, "/zipcodes/10001")
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			var z location.ZipCode
			if err := json.Unmarshal(body, &z); err != nil {
				t.Fatal(err)
			}
			if z.City != "New York" || z.State != "NY" || math.Abs(z.Latitude-40.75) > 0.01 {
				t.Errorf("10001 = %+v", z)
			}
		})

		errorCases := []struct {
			name, path string
			status     int
			code, want string
		}{
			{"unknown zip", "/zipcodes/99999", 404, "not_found", "99999"},
			{"malformed zip", "/zipcodes/12ab", 400, "invalid", "5 digits"},
			{"near unknown zip", "/zipcodes?near=99999&km=5", 404, "not_found", "99999"},
			{"negative km", "/zipcodes?near=10001&km=-1", 400, "invalid", "km"},
			{"text km", "/zipcodes?near=10001&km=far", 400, "invalid", "km"},
			{"huge km", "/zipcodes?near=10001&km=100000", 400, "invalid", "km"},
			{"km without near", "/zipcodes?km=5", 400, "invalid", "near"},
			{"unknown parameter", "/zipcodes?city=Boston", 400, "invalid", "city"},
			{"unknown route", "/zipcode/10001", 404, "not_found", "no route"},
		}
		for _, tt := range errorCases {
			t.Run(tt.name, func(t *testing.T) {
				resp, body := get(t, tt.path)
				if resp.StatusCode != tt.status {
					t.Fatalf("status = %d, want %d: %s", resp.StatusCode, tt.status, body)
				}
				if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q", ct)
				}
				var e errorBody
				if err := json.Unmarshal(body, &e); err != nil {
					t.Fatalf("error body %s: %v", body, err)
				}
				if e.Error.Code != tt.code || !strings.Contains(e.Error.Message, tt.want) {
					t.Errorf("error = %+v, want code %s mentioning %q", e.Error, tt.code, tt.want)
				}
			})
		}

		t.Run("near", func(t *testing.T) {
			resp, body := get(t, "/zipcodes?near=10001&km=5")
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			var got struct {
				Zipcodes []location.NearbyZipCode `json:"zipcodes"`
			}
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatal(err)
			}
			var zips []string
			for i, z := range got.Zipcodes {
				zips = append(zips, z.Zip)
				if z.DistanceKM > 5 {
					t.Errorf("%s is %.2f km away, beyond 5", z.Zip, z.DistanceKM)
				}
				if i > 0 && z.DistanceKM < got.Zipcodes[i-1].DistanceKM {
					t.Errorf("results not sorted by distance: %v", got.Zipcodes)
				}
			}
			if len(zips) == 0 || zips[0] != "10001" || got.Zipcodes[0].DistanceKM != 0 {
				t.Fatalf("nearest = %v, want 10001 itself first", zips)
			}
			for _, want := range []string{"10011", "10036"} {
				if !slices.Contains(zips, want) {
					t.Errorf("%s (Manhattan) missing from %v", want, zips)
				}
			}
			for _, far := range []string{"11354", "90012"} {
				if slices.Contains(zips, far) {
					t.Errorf("%s is more than 5 km from 10001 but listed", far)
				}
			}
		})

		t.Run("list with etag", func(t *testing.T) {
			resp, body := get(t, "/zipcodes")
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			var got struct {
				Zipcodes []location.ZipCode `json:"zipcodes"`
			}
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatal(err)
			}
			want, _ := location.Dataset()
			if len(got.Zipcodes) != len(want) {
				t.Errorf("listed %d zip codes, want %d", len(got.Zipcodes), len(want))
			}
			etag := resp.Header.Get("ETag")
			if etag == "" {
				t.Fatal("no ETag")
			}
			resp, body = get(t, "/zipcodes", "If-None-Match", etag)
			if resp.StatusCode != http.StatusNotModified || len(body) != 0 {
				t.Errorf("conditional GET = %d with %d bytes, want 304 and no body", resp.StatusCode, len(body))
			}
			resp, _ = get(t, "/zipcodes", "If-None-Match", `"stale"`)
			if resp.StatusCode != 200 {
				t.Errorf("GET with a stale ETag = %d, want 200", resp.StatusCode)
			}
		})
	})
}
