package outbox

import (
	"context"
	"testing"
	"time"

	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

// TestMarkSentUsesTheIndexOnAGrownOutbox: the relay's statement that
// records a round must find its rows by index however small the outbox
// was when the connection first ran it. A plan cached while the table was
// empty scanned all of it, every round, for a relay draining a backlog.
// The connection here caches generic plans at once, as PostgreSQL does on
// its own after a few calls.
func TestMarkSentUsesTheIndexOnAGrownOutbox(t *testing.T) {
	ctx := context.Background()
	db := sqldbtest.Open(t, sqldb.Postgres)
	if _, err := sqldb.Migrate(ctx, db, MigrationSet, Migrations()); err != nil {
		t.Fatal(err)
	}
	conn, err := db.Writer().Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SET plan_cache_mode = force_generic_plan`); err != nil {
		t.Fatal(err)
	}
	for _, retention := range []time.Duration{-1, time.Hour} {
		r := &Relay{db: db, cfg: RelayConfig{Retention: retention}}
		if err := r.markSent(ctx, conn, 1, []int64{1}); err != nil { // on an empty outbox
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_seq, event_type,
			subject, headers, created_at, next_attempt_at)
			SELECT 'e' || g || '-' || $1, 'a', 'x', g, 't', 's', '{}', 1, 1 FROM generate_series(1, 5000) g`, retention.String()); err != nil {
			t.Fatal(err)
		}
		var first int64
		if err := db.QueryRowContext(ctx, `SELECT min(seq) FROM outbox WHERE status = 'pending'`).Scan(&first); err != nil {
			t.Fatal(err)
		}
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.markSent(ctx, tx, 2, []int64{first, first + 1, first + 2}); err != nil {
			t.Fatal(err)
		}
		var scanned int64
		if err := tx.QueryRowContext(ctx, `SELECT seq_tup_read FROM pg_stat_xact_user_tables
			WHERE relid = 'outbox'::regclass`).Scan(&scanned); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if scanned != 0 {
			t.Errorf("retention %v: recording 3 rows read %d rows sequentially, want an index lookup", retention, scanned)
		}
	}
}
