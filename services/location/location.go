package location

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"database/sql"
	"embed"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/internal/host"
	"github.com/sysops-squad/sysops/internal/svc"
	"github.com/sysops-squad/sysops/natsjs"
	"github.com/sysops-squad/sysops/sqldb"
)

// Name is the service's name.
const Name = "location"

//go:embed migrations/*.sql
var migrations embed.FS

//go:embed zipcodes.csv
var zipcodesCSV []byte

// Migrations returns the service's schema migrations.
func Migrations() fs.FS { return svc.Migrations(migrations) }

// Spec describes the service to its host.
func Spec() host.Spec {
	return host.Spec{
		TransactionalKeys: true,
		Name:              Name,
		Migrations:        Migrations(),
		Streams:           []natsjs.StreamSpec{natsjs.ServiceStream(Name)},
		Start: func(ctx context.Context, deps host.Deps) (http.Handler, error) {
			s := New(deps.DB, deps.Logger)
			if err := s.Seed(ctx); err != nil {
				return nil, err
			}
			return s.Handler(), nil
		},
	}
}

// ZipCode is one row of the zip_code table.
type ZipCode struct {
	Zip       string  `json:"zip"`
	City      string  `json:"city"`
	State     string  `json:"state"`
	Latitude  float64 `json:"latitude"`
	Longitude float64 `json:"longitude"`
}

// NearbyZipCode is a zip code with its distance from the one asked about.
type NearbyZipCode struct {
	ZipCode
	DistanceKM float64 `json:"distance_km"`
}

// Service is the Location service.
type Service struct {
	db     *sqldb.DB
	logger *slog.Logger
}

// New returns the service over its own, migrated database.
func New(db *sqldb.DB, logger *slog.Logger) *Service {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Service{db: db, logger: logger}
}

// Dataset parses the embedded data file.
func Dataset() ([]ZipCode, error) {
	return parseCSV(zipcodesCSV)
}

// DatasetVersion identifies the embedded data file's content.
func DatasetVersion() string {
	sum := sha256.Sum256(zipcodesCSV)
	return hex.EncodeToString(sum[:8])
}

var zipPattern = regexp.MustCompile(`^[0-9]{5}$`)

func parseCSV(b []byte) ([]ZipCode, error) {
	r := csv.NewReader(bytes.NewReader(b))
	r.FieldsPerRecord = 5
	records, err := r.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("location: zip code data: %w", err)
	}
	if len(records) == 0 || !slices.Equal(records[0], []string{"zip", "city", "state", "latitude", "longitude"}) {
		return nil, errors.New("location: zip code data: missing header zip,city,state,latitude,longitude")
	}
	out := make([]ZipCode, 0, len(records)-1)
	for i, rec := range records[1:] {
		line := i + 2
		z := ZipCode{Zip: rec[0], City: rec[1], State: rec[2]}
		if !zipPattern.MatchString(z.Zip) {
			return nil, fmt.Errorf("location: zip code data line %d: zip %q is not 5 digits", line, z.Zip)
		}
		if z.Latitude, err = strconv.ParseFloat(rec[3], 64); err != nil || z.Latitude < -90 || z.Latitude > 90 {
			return nil, fmt.Errorf("location: zip code data line %d: bad latitude %q", line, rec[3])
		}
		if z.Longitude, err = strconv.ParseFloat(rec[4], 64); err != nil || z.Longitude < -180 || z.Longitude > 180 {
			return nil, fmt.Errorf("location: zip code data line %d: bad longitude %q", line, rec[4])
		}
		out = append(out, z)
	}
	return out, nil
}

// Seed loads the embedded data file if the database holds another version
// of it (or none). Rows are upserted, so zip codes added by an operator
// survive.
func (s *Service) Seed(ctx context.Context) error {
	version := DatasetVersion()
	var loaded string
	err := s.db.QueryRowContext(ctx, `SELECT version FROM dataset WHERE id = 1`).Scan(&loaded)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("location: read dataset version: %w", err)
	}
	if loaded == version {
		return nil
	}
	zips, err := Dataset()
	if err != nil {
		return err
	}
	err = sqldb.RunInScope(ctx, s.db, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO zip_code (zip, city, state, latitude, longitude)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (zip) DO UPDATE SET city = excluded.city, state = excluded.state,
				latitude = excluded.latitude, longitude = excluded.longitude`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, z := range zips {
			if _, err := stmt.ExecContext(ctx, z.Zip, z.City, z.State, z.Latitude, z.Longitude); err != nil {
				return fmt.Errorf("zip %s: %w", z.Zip, err)
			}
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO dataset (id, version, rows, loaded_at) VALUES (1, $1, $2, $3)
			ON CONFLICT (id) DO UPDATE SET version = excluded.version, rows = excluded.rows, loaded_at = excluded.loaded_at`,
			version, len(zips), time.Now().UTC().Format(time.RFC3339))
		return err
	})
	if err != nil {
		return fmt.Errorf("location: seed zip codes: %w", err)
	}
	s.logger.InfoContext(ctx, "zip codes loaded", "rows", len(zips), "version", version)
	return nil
}

// Get returns one zip code.
func (s *Service) Get(ctx context.Context, zip string) (ZipCode, error) {
	if !zipPattern.MatchString(zip) {
		return ZipCode{}, sysops.Errorf(sysops.EInvalid, "zip %q must be 5 digits", zip)
	}
	z := ZipCode{Zip: zip}
	err := s.db.QueryRowContext(ctx, `SELECT city, state, latitude, longitude FROM zip_code WHERE zip = $1`, zip).
		Scan(&z.City, &z.State, &z.Latitude, &z.Longitude)
	if errors.Is(err, sql.ErrNoRows) {
		return ZipCode{}, sysops.Errorf(sysops.ENotFound, "zip code %s not found", zip)
	}
	if err != nil {
		return ZipCode{}, fmt.Errorf("get zip %s: %w", zip, err)
	}
	return z, nil
}

// List returns every zip code, ordered by zip.
func (s *Service) List(ctx context.Context) ([]ZipCode, error) {
	return s.query(ctx, `SELECT zip, city, state, latitude, longitude FROM zip_code ORDER BY zip`)
}

func (s *Service) query(ctx context.Context, q string, args ...any) ([]ZipCode, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list zip codes: %w", err)
	}
	defer rows.Close()
	out := []ZipCode{}
	for rows.Next() {
		var z ZipCode
		if err := rows.Scan(&z.Zip, &z.City, &z.State, &z.Latitude, &z.Longitude); err != nil {
			return nil, fmt.Errorf("list zip codes: %w", err)
		}
		out = append(out, z)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list zip codes: %w", err)
	}
	return out, nil
}

// MaxRadiusKM bounds a Near query.
const MaxRadiusKM = 5000

// Near returns the zip codes within km kilometres of zip, nearest first,
// zip itself included at distance 0.
func (s *Service) Near(ctx context.Context, zip string, km float64) ([]NearbyZipCode, error) {
	if math.IsNaN(km) || km <= 0 || km > MaxRadiusKM {
		return nil, sysops.Errorf(sysops.EInvalid, "km must be a number above 0 and at most %d", MaxRadiusKM)
	}
	center, err := s.Get(ctx, zip)
	if err != nil {
		return nil, err
	}
	// A latitude band narrows the scan; the exact distance decides.
	dLat := km / 111.0
	candidates, err := s.query(ctx, `SELECT zip, city, state, latitude, longitude FROM zip_code
		WHERE latitude BETWEEN $1 AND $2`, center.Latitude-dLat, center.Latitude+dLat)
	if err != nil {
		return nil, err
	}
	out := []NearbyZipCode{}
	for _, z := range candidates {
		if d := DistanceKM(center, z); d <= km {
			out = append(out, NearbyZipCode{ZipCode: z, DistanceKM: math.Round(d*100) / 100})
		}
	}
	slices.SortFunc(out, func(a, b NearbyZipCode) int {
		return cmp.Or(cmp.Compare(a.DistanceKM, b.DistanceKM), strings.Compare(a.Zip, b.Zip))
	})
	return out, nil
}

// DistanceKM is the great-circle distance between two zip codes' centres.
func DistanceKM(a, b ZipCode) float64 {
	const earthRadiusKM = 6371.0
	rad := func(d float64) float64 { return d * math.Pi / 180 }
	dLat := rad(b.Latitude - a.Latitude)
	dLon := rad(b.Longitude - a.Longitude)
	h := math.Sin(dLat/2)*math.Sin(dLat/2) + math.Cos(rad(a.Latitude))*math.Cos(rad(b.Latitude))*math.Sin(dLon/2)*math.Sin(dLon/2)
	return 2 * earthRadiusKM * math.Asin(math.Min(1, math.Sqrt(h)))
}
