package saga

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

// TestWaitLeavesNoWaiter: Wait registers to be woken by this instance's
// driver; every return takes the registration back — for a saga already
// ended, one this instance does not drive, or a caller that gave up —
// so that waiting leaves nothing behind however often it is done.
func TestWaitLeavesNoWaiter(t *testing.T) {
	db := sqldbtest.Open(t, sqldb.SQLite)
	ctx := context.Background()
	if _, err := sqldb.Migrate(ctx, db, MigrationSet, Migrations()); err != nil {
		t.Fatal(err)
	}
	ok := func(context.Context, Call) (json.RawMessage, error) { return nil, nil }
	o, err := New(db, Config{PollInterval: time.Hour}, Definition{Name: "w", Version: 1, Steps: []Step{{Name: "one", Action: ok}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer o.Stop()
	for range 20 {
		if s, err := o.Run(ctx, "w", "", nil); err != nil || s.State != Committed {
			t.Fatalf("run: %s, %v", s.State, err)
		}
	}
	ended, err := o.Begin(ctx, "w", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Wait(ctx, ended); err != nil {
		t.Fatal(err)
	}
	for range 20 { // an ended saga, waited for again and again
		if _, err := o.Wait(ctx, ended); err != nil {
			t.Fatal(err)
		}
	}
	// A saga another instance drives: running in the log, not here.
	if _, err := db.ExecContext(ctx, `UPDATE saga SET state = 'running', lease_owner = 'other', lease_until = $1 WHERE id = $2`,
		time.Now().Add(time.Hour).UnixMicro(), ended); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := o.Wait(wctx, ended); err == nil {
		t.Fatal("waited out a saga no one here drives")
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if n := len(o.waiters); n != 0 {
		t.Errorf("%d sagas still have waiters registered after every Wait returned", n)
	}
}
