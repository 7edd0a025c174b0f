package saga

import (
	"context"
	"database/sql"
	"sync/atomic"
	"time"

	"github.com/sysops-squad/sysops/sqldb"
)

// clock is the time an orchestrator reads leases, deadlines and due times
// by: its own clock corrected by an offset to the database's, measured at
// Start and every clockSyncEvery. Instances on several machines then agree
// on when a lease expires however far their clocks drift: one whose clock
// ran a minute ahead would otherwise find every other instance's leases
// expired and take their sagas (its writes fenced off theirs, at the cost
// of churn), and judge deadlines a minute early.
type clock struct {
	local  func() time.Time // the machine's clock; a test skews it
	offset atomic.Int64     // database minus local, in nanoseconds
	synced atomic.Int64     // when it was last measured (local, Unix ns)
}

// clockSyncEvery is how often the offset is measured again.
const clockSyncEvery = time.Minute

func (c *clock) now() time.Time { return c.local().Add(time.Duration(c.offset.Load())) }

// sync measures the offset, unless it was measured less than
// clockSyncEvery ago; the reading is taken at the middle of the round trip.
func (c *clock) sync(ctx context.Context, db *sqldb.DB) error {
	if last := c.synced.Load(); last != 0 && c.local().Sub(time.Unix(0, last)) < clockSyncEvery {
		return nil
	}
	before := c.local()
	at, err := dbNow(ctx, db, db.Dialect())
	if err != nil {
		return err
	}
	after := c.local()
	c.offset.Store(int64(at.Sub(before.Add(after.Sub(before) / 2))))
	c.synced.Store(after.UnixNano())
	return nil
}

// dbNow reads the database's clock (microseconds).
func dbNow(ctx context.Context, db interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}, d sqldb.Dialect) (time.Time, error) {
	q := `SELECT CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)`
	if d == sqldb.Postgres {
		q = `SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)`
	}
	var at int64
	if err := db.QueryRowContext(ctx, q).Scan(&at); err != nil {
		return time.Time{}, err
	}
	return fromUS(at), nil
}
