package sqldb_test

import (
	"context"
	"testing"
	"time"

	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

// TestClockFollowsTheDatabase: a clock whose machine runs an hour ahead
// reads the database's time once synced; a Sync within the minute asks
// the database nothing, unless the machine's clock jumped since.
func TestClockFollowsTheDatabase(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := sqldbtest.Open(t, d)
		at, err := sqldb.DatabaseNow(ctx, db, d)
		if err != nil {
			t.Fatal(err)
		}
		if off := time.Since(at); off > 5*time.Second || off < -5*time.Second {
			t.Errorf("the database's clock reads %v, this machine's %v", at, time.Now())
		}
		skew := time.Hour
		c := &sqldb.Clock{Local: func() time.Time { return time.Now().Add(skew) }}
		if off := time.Until(c.Now()); off < 59*time.Minute {
			t.Errorf("before its first Sync the clock reads the machine's: %v ahead, want 1h", off)
		}
		other, err := sqldb.Open(ctx, db.URL())
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Sync(ctx, other); err != nil {
			t.Fatal(err)
		}
		if off := time.Until(c.Now()); off > 5*time.Second || off < -5*time.Second {
			t.Errorf("after Sync the clock is %v off the database's", off)
		}
		// Within the minute a Sync asks nothing (it would fail: that
		// handle is closed)...
		other.Close()
		if err := c.Sync(ctx, other); err != nil {
			t.Errorf("a Sync within the minute measured again: %v", err)
		}
		// ...unless the machine's clock jumped since.
		skew = 2 * time.Hour
		if err := c.Sync(ctx, db); err != nil {
			t.Fatal(err)
		}
		if off := time.Until(c.Now()); off > 5*time.Second || off < -5*time.Second {
			t.Errorf("after the machine's clock jumped, the clock is %v off the database's", off)
		}
	})
}
