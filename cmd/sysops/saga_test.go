package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sysops-squad/sysops/saga"
	"github.com/sysops-squad/sysops/services/orchestrator"
	"github.com/sysops-squad/sysops/sqldb"
)

// TestSagaCommands: a saga whose compensation kept failing is listed,
// shown, retried, and resolved from the command line.
func TestSagaCommands(t *testing.T) {
	dataDir := t.TempDir()
	ctx := context.Background()
	url, err := sqldb.Provision(ctx, dataDir, orchestrator.Name)
	if err != nil {
		t.Fatal(err)
	}
	db, err := sqldb.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := sqldb.Migrate(ctx, db, orchestrator.Name, saga.Migrations()); err != nil {
		t.Fatal(err)
	}
	ok := func(context.Context, saga.Call) (json.RawMessage, error) { return nil, nil }
	def := saga.Definition{Name: "charge", Version: 1, Steps: []saga.Step{
		{Name: "pay", Action: ok, CompensationRetry: saga.RetryPolicy{MaxAttempts: 1},
			Compensate: func(context.Context, saga.Call) (json.RawMessage, error) { return nil, errors.New("refund refused") }},
		{Name: "ship", Action: func(context.Context, saga.Call) (json.RawMessage, error) {
			return nil, saga.Reject(errors.New("out of stock"))
		}},
	}}
	o, err := saga.New(db, saga.Config{PollInterval: time.Hour}, def)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range 2 {
		s, err := o.Run(ctx, "charge", "", nil)
		if err != nil || s.State != saga.NeedsAttention {
			t.Fatalf("saga = %+v, %v", s, err)
		}
		ids = append(ids, s.ID)
	}
	o.Stop()

	run := func(args ...string) (string, error) {
		out, err := exec.Command(binary, append(args, "--data-dir", dataDir)...).CombinedOutput()
		return string(out), err
	}
	if out, err := run("saga", "list", "--state", "needs_attention"); err != nil || strings.Count(out, "refund refused") != 2 {
		t.Errorf("list: %v\n%s", err, out)
	}
	if out, err := run("saga", "show", ids[0]); err != nil || !strings.Contains(out, `"compensation_attempts": 1`) {
		t.Errorf("show: %v\n%s", err, out)
	}
	if out, err := run("saga", "retry", ids[0]); err != nil || !strings.Contains(out, "fresh budget") {
		t.Errorf("retry: %v\n%s", err, out)
	}
	if s, _ := saga.Get(ctx, db, ids[0]); s.State != saga.Compensating || s.Steps[0].CompensationAttempts != 0 {
		t.Errorf("after retry: %+v", s)
	}
	if out, err := run("saga", "resolve", ids[1]); err == nil || !strings.Contains(out, "--note") {
		t.Errorf("resolve without a note: %v\n%s", err, out)
	}
	if out, err := run("saga", "resolve", ids[1], "--note", "refunded by hand"); err != nil || !strings.Contains(out, "resolved") {
		t.Errorf("resolve: %v\n%s", err, out)
	}
	if out, err := run("saga", "skip", ids[1]); err == nil || !strings.Contains(out, "needs_attention") {
		t.Errorf("skip a resolved saga: %v\n%s", err, out)
	}
	if out, err := run("saga", "show", "nope"); err == nil || !strings.Contains(out, "not found") {
		t.Errorf("show unknown: %v\n%s", err, out)
	}
	if out, err := run("saga", "list", "--state", "stuck"); err == nil || !strings.Contains(out, `unknown saga state "stuck"`) {
		t.Errorf("list of an unknown state: %v\n%s", err, out)
	}
	if out, err := run("saga", "list", "--state", "running", "--definition", "refund"); err != nil || strings.TrimSpace(out) != `no sagas in state running of definition "refund"` {
		t.Errorf("list with no match: %v\n%s", err, out)
	}
	if out, err := run("saga", "list", "--limit", "0"); err == nil || !strings.Contains(out, "--limit 0") {
		t.Errorf("list --limit 0: %v\n%s", err, out)
	}

	// Pointed at a data directory where the system never ran, the
	// commands say so and create nothing there.
	elsewhere := filepath.Join(t.TempDir(), "typo")
	out, err := exec.Command(binary, "saga", "list", "--data-dir", elsewhere).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "has no orchestrator.db") || !strings.Contains(string(out), "--data-dir") {
		t.Errorf("list in a data dir where nothing ran: %v\n%s", err, out)
	}
	if _, err := os.Stat(elsewhere); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the command created %s (%v)", elsewhere, err)
	}

	// A log one migration behind this build (the system runs an older
	// build) is refused, and left as it is.
	if _, err := db.ExecContext(ctx, `DELETE FROM orchestrator_schema WHERE version_id = (SELECT max(version_id) FROM orchestrator_schema)`); err != nil {
		t.Fatal(err)
	}
	before, err := schemaVersion(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := run("saga", "list"); err == nil || !strings.Contains(out, fmt.Sprintf("at version %d and this build's at %d", before, before+1)) {
		t.Errorf("list on an older log: %v\n%s", err, out)
	}
	if after, err := schemaVersion(ctx, db); err != nil || after != before {
		t.Errorf("the log's schema went from version %d to %d (%v)", before, after, err)
	}
}

// schemaVersion is the orchestrator's schema version.
func schemaVersion(ctx context.Context, db *sqldb.DB) (version int64, err error) {
	err = db.QueryRowContext(ctx, `SELECT max(version_id) FROM orchestrator_schema`).Scan(&version)
	return version, err
}
