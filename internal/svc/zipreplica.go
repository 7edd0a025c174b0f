package svc

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/sqldb"
)

//go:embed migrations/*.sql
var migrations embed.FS

// ZipReplicaMigrationSet names the replica's migrations in a service's
// database.
const ZipReplicaMigrationSet = "zip_replica"

// ZipReplicaMigrations returns the schema of the replicated zip codes.
func ZipReplicaMigrations() fs.FS {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the embedded directory is part of the binary
	}
	return sub
}

// Zip is one replicated zip code.
type Zip struct {
	Zip       string  `json:"zip"`
	City      string  `json:"city"`
	State     string  `json:"state"`
	Latitude  float64 `json:"latitude"`
	Longitude float64 `json:"longitude"`
}

// KM returns the great-circle distance between a and b in kilometres.
func KM(a, b Zip) float64 {
	const r = 6371.0
	rad := math.Pi / 180
	dLat := (b.Latitude - a.Latitude) * rad
	dLon := (b.Longitude - a.Longitude) * rad
	h := math.Sin(dLat/2)*math.Sin(dLat/2) +
		math.Cos(a.Latitude*rad)*math.Cos(b.Latitude*rad)*math.Sin(dLon/2)*math.Sin(dLon/2)
	return 2 * r * math.Asin(math.Min(1, math.Sqrt(h)))
}

// ZipReplica keeps a local copy of location's zip codes, refreshed in the
// background with a conditional GET (If-None-Match on location's ETag),
// and answers lookups from the copy alone — so the service keeps working
// while location is down.
type ZipReplica struct {
	db     *sqldb.DB
	peers  Peers
	http   *http.Client
	logger *slog.Logger

	mu       sync.Mutex
	cached   map[string]Zip // the copy as last read, shared by readers
	cachedAt time.Time
}

// zipCacheTTL is how long a read of the whole copy answers lookups. The
// copy follows location only every refresh interval anyway; this bounds
// how late an instance sees a refresh made by another instance sharing
// its database (its own refreshes drop the cache at once).
const zipCacheTTL = 5 * time.Second

// NewZipReplica returns a replica in db of the zip codes served by the
// location service, found in peers.
func NewZipReplica(db *sqldb.DB, peers Peers, logger *slog.Logger) *ZipReplica {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &ZipReplica{db: db, peers: peers, http: &http.Client{Timeout: 10 * time.Second}, logger: logger}
}

// StartZipReplica migrates the copy's tables in db, then starts a replica
// of location's zip codes (location found in peers) refreshed every
// interval (see [ZipReplica.Start]).
func StartZipReplica(ctx context.Context, db *sqldb.DB, peers Peers, logger *slog.Logger, interval time.Duration) (*ZipReplica, error) {
	if _, err := sqldb.Migrate(ctx, db, ZipReplicaMigrationSet, ZipReplicaMigrations()); err != nil {
		return nil, err
	}
	z := NewZipReplica(db, peers, logger)
	z.Start(ctx, interval)
	return z, nil
}

// Start refreshes the copy now (a failure is logged, not returned: the
// existing copy serves) and then every interval until ctx ends; while the
// copy is empty it retries every second.
func (z *ZipReplica) Start(ctx context.Context, interval time.Duration) {
	if _, err := z.Refresh(ctx); err != nil {
		z.logger.WarnContext(ctx, "zip replica: refresh failed; serving the local copy", "error", err)
	}
	go func() {
		for {
			wait := interval
			if n, err := z.Len(ctx); err == nil && n == 0 {
				wait = min(interval, time.Second)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			if _, err := z.Refresh(ctx); err != nil && ctx.Err() == nil {
				z.logger.WarnContext(ctx, "zip replica: refresh failed; serving the local copy", "error", err)
			}
		}
	}()
}

// Refresh copies location's zip codes if they changed since the last copy
// and reports whether they did.
func (z *ZipReplica) Refresh(ctx context.Context) (changed bool, err error) {
	location := z.peers.URL("location")
	if location == "" {
		return false, sysops.Errorf(sysops.EUnavailable, "zip replica: location's address is not known")
	}
	var etag string
	err = z.db.QueryRowContext(ctx, `SELECT etag FROM zip_replica_meta WHERE id = 1`).Scan(&etag)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return false, fmt.Errorf("zip replica: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, location+"/zipcodes", nil)
	if err != nil {
		return false, err
	}
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	resp, err := z.http.Do(req)
	if err != nil {
		return false, sysops.Errorf(sysops.EUnavailable, "zip replica: location unavailable: %v", err)
	}
	defer resp.Body.Close()
	now := time.Now().UnixMicro()
	switch resp.StatusCode {
	case http.StatusNotModified:
		_, err := z.db.ExecContext(ctx, `UPDATE zip_replica_meta SET checked_at = $1 WHERE id = 1`, now)
		return false, err
	case http.StatusOK:
	default:
		return false, sysops.Errorf(sysops.EUnavailable, "zip replica: location answered %s", resp.Status)
	}
	var body struct {
		Zipcodes *[]Zip `json:"zipcodes"`
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return false, sysops.Errorf(sysops.EUnavailable, "zip replica: read location's answer: %v", err)
	}
	if err := json.Unmarshal(b, &body); err != nil {
		return false, fmt.Errorf("zip replica: decode location's answer: %w", err)
	}
	// The copy is replaced by the answer, so an answer that is not a list
	// of zip codes (another service at location's address, a proxy's
	// page) must not be taken for an empty one: the copy is kept.
	if body.Zipcodes == nil {
		return false, errors.New("zip replica: location's answer has no zipcodes list; the copy is kept")
	}
	zips := *body.Zipcodes
	seen := make(map[string]bool, len(zips))
	for i, zc := range zips {
		if zc.Zip == "" || seen[zc.Zip] || math.Abs(zc.Latitude) > 90 || math.Abs(zc.Longitude) > 180 {
			return false, fmt.Errorf("zip replica: location's answer has a bad or repeated zip code at %d (%+v); the copy is kept", i, zc)
		}
		seen[zc.Zip] = true
	}
	newTag := resp.Header.Get("ETag")
	err = sqldb.RunInTx(ctx, z.db, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM zip_replica`); err != nil {
			return err
		}
		for _, zc := range zips {
			if _, err := tx.ExecContext(ctx, `INSERT INTO zip_replica (zip, city, state, latitude, longitude)
				VALUES ($1, $2, $3, $4, $5)`, zc.Zip, zc.City, zc.State, zc.Latitude, zc.Longitude); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO zip_replica_meta (id, etag, rows_copied, refreshed_at, checked_at)
			VALUES (1, $1, $2, $3, $3) ON CONFLICT (id) DO UPDATE SET etag = $1, rows_copied = $2, refreshed_at = $3, checked_at = $3`,
			newTag, len(zips), now)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("zip replica: store copy: %w", err)
	}
	z.mu.Lock()
	z.cached = nil
	z.mu.Unlock()
	z.logger.InfoContext(ctx, "zip replica refreshed", "rows", len(zips), "etag", newTag)
	return true, nil
}

// Len returns how many zip codes the copy holds.
func (z *ZipReplica) Len(ctx context.Context) (int, error) {
	var n int
	err := z.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM zip_replica`).Scan(&n)
	return n, err
}

// Lookup returns a zip code from the copy: [sysops.ENotFound] for one
// location does not know, [sysops.EUnavailable] while nothing has been
// copied yet.
func (z *ZipReplica) Lookup(ctx context.Context, zip string) (Zip, error) {
	if all, err := z.All(ctx); err == nil {
		if zc, ok := all[zip]; ok {
			return zc, nil
		}
	}
	var out Zip
	err := z.db.QueryRowContext(ctx, `SELECT zip, city, state, latitude, longitude FROM zip_replica WHERE zip = $1`, zip).
		Scan(&out.Zip, &out.City, &out.State, &out.Latitude, &out.Longitude)
	if errors.Is(err, sql.ErrNoRows) {
		if n, lerr := z.Len(ctx); lerr == nil && n == 0 {
			return out, sysops.Errorf(sysops.EUnavailable, "zip codes are not replicated from location yet; retry shortly")
		}
		return out, sysops.Errorf(sysops.EInvalid, "unknown zip code %q", zip)
	}
	if err != nil {
		return out, fmt.Errorf("zip replica: %w", err)
	}
	return out, nil
}

// All returns every zip code of the copy, by zip. The map is shared with
// other callers for a few seconds (zipCacheTTL): read it, do not change
// it.
func (z *ZipReplica) All(ctx context.Context) (map[string]Zip, error) {
	z.mu.Lock()
	all, at := z.cached, z.cachedAt
	z.mu.Unlock()
	if all != nil && time.Since(at) < zipCacheTTL {
		return all, nil
	}
	at = time.Now()
	all, err := z.load(ctx)
	if err != nil {
		return nil, err
	}
	if len(all) > 0 {
		z.mu.Lock()
		z.cached, z.cachedAt = all, at
		z.mu.Unlock()
	}
	return all, nil
}

// load reads the whole copy.
func (z *ZipReplica) load(ctx context.Context) (map[string]Zip, error) {
	q, err := z.db.QueryContext(ctx, `SELECT zip, city, state, latitude, longitude FROM zip_replica`)
	if err != nil {
		return nil, err
	}
	defer q.Close()
	out := map[string]Zip{}
	for q.Next() {
		var zc Zip
		if err := q.Scan(&zc.Zip, &zc.City, &zc.State, &zc.Latitude, &zc.Longitude); err != nil {
			return nil, err
		}
		out[zc.Zip] = zc
	}
	return out, q.Err()
}

// Nearest orders zips by distance from origin, nearest first; zips not in
// the copy go last.
func Nearest(origin Zip, zips []string, all map[string]Zip) []string {
	out := append([]string(nil), zips...)
	dist := func(z string) float64 {
		if zc, ok := all[z]; ok {
			return KM(origin, zc)
		}
		return math.Inf(1)
	}
	sort.SliceStable(out, func(i, j int) bool { return dist(out[i]) < dist(out[j]) })
	return out
}
