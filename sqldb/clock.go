package sqldb

import (
	"context"
	"database/sql"
	"sync"
	"time"
)

// Clock is the time by which several processes sharing a database judge
// leases, reservations and deadlines: the machine's clock corrected by
// its offset to the database's, measured by [Clock.Sync]. Processes on
// machines whose clocks drift apart still agree on when a lease expires:
// one whose clock ran a minute ahead would otherwise find every other
// process's leases expired. The zero value is ready, with no offset
// until the first Sync.
type Clock struct {
	// Local is the machine's clock. Default time.Now; a test skews it.
	Local func() time.Time

	measuring sync.Mutex // held by the caller measuring

	mu       sync.Mutex
	offset   time.Duration // database minus local
	measured bool
	atMono   time.Time // when it was measured, by the monotonic clock
	atLocal  time.Time // and by Local
}

// ClockSyncEvery is how often [Clock.Sync] measures the offset again,
// unless the machine's clock jumps (an NTP step) in between.
const ClockSyncEvery = time.Minute

func (c *Clock) local() time.Time {
	if c.Local != nil {
		return c.Local()
	}
	return time.Now()
}

// Now is the database's time, as far as the last Sync measured it.
func (c *Clock) Now() time.Time { return c.local().Add(c.Offset()) }

// Offset is the database's clock minus the machine's, as last measured.
func (c *Clock) Offset() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.offset
}

// Sync measures the offset to db's clock, reading it at the middle of
// the round trip — unless it did less than ClockSyncEvery ago and the
// machine's clock has not jumped since, so callers may call it often.
// One caller measures at a time; while it does, the others go on with
// the last offset (or, before the first measure, wait for it).
func (c *Clock) Sync(ctx context.Context, db *DB) error {
	fresh, measured := c.state()
	if fresh {
		return nil
	}
	if !measured {
		c.measuring.Lock()
	} else if !c.measuring.TryLock() {
		return nil
	}
	defer c.measuring.Unlock()
	if fresh, _ := c.state(); fresh {
		return nil // measured while this caller waited
	}
	before := c.local()
	at, err := DatabaseNow(ctx, db, db.Dialect())
	if err != nil {
		return err
	}
	after := c.local()
	c.mu.Lock()
	c.offset = at.Sub(before.Add(after.Sub(before) / 2))
	c.measured, c.atMono, c.atLocal = true, time.Now(), after
	c.mu.Unlock()
	return nil
}

// state reports whether the offset is fresh (measured less than
// ClockSyncEvery ago, and the machine's clock has not jumped since), and
// whether it was ever measured.
func (c *Clock) state() (fresh, measured bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fresh = c.measured && time.Since(c.atMono) < ClockSyncEvery &&
		(c.local().Sub(c.atLocal)-time.Since(c.atMono)).Abs() < time.Second
	return fresh, c.measured
}

// DatabaseNow reads the clock of the database that q (a *DB, *sql.Tx or
// *sql.Conn of dialect d) reaches, to the microsecond.
func DatabaseNow(ctx context.Context, q interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}, d Dialect) (time.Time, error) {
	query := `SELECT CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)`
	if d == Postgres {
		query = `SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)`
	}
	var at int64
	if err := q.QueryRowContext(ctx, query).Scan(&at); err != nil {
		return time.Time{}, err
	}
	return time.UnixMicro(at).UTC(), nil
}
