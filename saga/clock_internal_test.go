package saga

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

// TestSkewedClockTakesNoLiveSaga: an instance whose clock runs a minute
// ahead goes by the database's clock, so it finds another instance's
// live lease live, and takes nothing over; a deadline it sets is the
// database's time plus the definition's deadline.
func TestSkewedClockTakesNoLiveSaga(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		db := sqldbtest.Open(t, d)
		if _, err := sqldb.Migrate(ctx, db, MigrationSet, Migrations()); err != nil {
			t.Fatal(err)
		}
		block := make(chan struct{})
		defer close(block)
		def := Definition{Name: "s", Version: 1, Deadline: time.Hour, Steps: []Step{{Name: "wait", Participant: "p", Timeout: 5 * time.Second,
			Action: func(ctx context.Context, _ Call) (json.RawMessage, error) {
				select {
				case <-block:
				case <-ctx.Done():
				}
				return nil, ctx.Err()
			}}}}
		a, err := New(db, Config{Owner: "a", PollInterval: time.Hour}, def)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer a.Stop()
		id, err := a.Begin(ctx, "s", "held", nil)
		if err != nil {
			t.Fatal(err)
		}

		skewed, err := New(db, Config{Owner: "skewed", PollInterval: time.Hour}, def)
		if err != nil {
			t.Fatal(err)
		}
		skewed.clock.Local = func() time.Time { return time.Now().Add(time.Minute) }
		if err := skewed.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer skewed.Stop()
		if n, err := skewed.RunOnce(ctx); err != nil || n != 0 {
			t.Errorf("the skewed instance claimed %d sagas (%v); a's lease is live", n, err)
		}
		if off := skewed.clock.Offset(); off > -59*time.Second || off < -61*time.Second {
			t.Errorf("offset %v, want about -1m", off)
		}
		other, err := skewed.Begin(ctx, "s", "begun-skewed", nil)
		if err != nil {
			t.Fatal(err)
		}
		s, err := Get(ctx, db, other)
		if err != nil {
			t.Fatal(err)
		}
		if left := time.Until(s.DeadlineAt); left > time.Hour+5*time.Second || left < time.Hour-5*time.Second {
			t.Errorf("a saga begun on the skewed instance has %v until its deadline, want about 1h", left)
		}
		if h, _ := Get(ctx, db, id); h.LeaseOwner != "a" {
			t.Errorf("lease owner of a's saga: %q", h.LeaseOwner)
		}
	})
}
