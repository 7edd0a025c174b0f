package outboxbench_test

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sysops-squad/sysops/lab/outboxbench"
	"github.com/sysops-squad/sysops/natsjs/brokertest"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

func config(tb testing.TB, d sqldb.Dialect) outboxbench.Config {
	tb.Helper()
	srv := brokertest.RunServer(tb)
	return outboxbench.Config{ProducerURL: sqldbtest.URL(tb, d), ConsumerURL: sqldbtest.URL(tb, d), NATSURL: srv.ClientURL()}
}

// TestRunSmall runs every phase briefly so the bench itself stays working;
// it checks that the figures exist, not how large they are.
func TestRunSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every phase for a moment")
	}
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		cfg := config(t, d)
		cfg.Writers, cfg.Duration, cfg.Rate, cfg.LatencyDuration, cfg.Backlog = 2, 300*time.Millisecond, 200, 300*time.Millisecond, 2000
		cfg.Outage = 500 * time.Millisecond
		rep, err := outboxbench.Run(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Baseline <= 0 || rep.Writes <= 0 || rep.EndToEnd <= 0 || rep.Events == 0 || rep.Latency == 0 || rep.P99 < rep.P50 || rep.Drain <= 0 {
			t.Errorf("incomplete report: %+v", rep)
		}
		// The outage phase: writes went on while the broker was away, and
		// everything they wrote took effect, nothing dead.
		if rep.OutageWritten == 0 || rep.OutageEvents <= rep.OutageWritten || rep.OutageRecovery <= 0 || rep.OutageDead != 0 {
			t.Errorf("outage phase: %+v", rep)
		}
		// The machine's CPU per transaction or event is read where it can
		// be (Linux), and printed.
		if runtime.GOOS == "linux" {
			for _, c := range []struct {
				per  time.Duration
				busy float64
			}{{rep.BaselineCPU, rep.BaselineBusy}, {rep.WritesCPU, rep.WritesBusy}, {rep.EndToEndCPU, rep.EndToEndBusy}} {
				if c.per <= 0 || c.busy <= 0 || c.busy > 1 {
					t.Errorf("CPU figures missing: %+v", rep)
				}
			}
			var out bytes.Buffer
			rep.Print(&out)
			if n := strings.Count(out.String(), "ms each, machine "); n != 3 {
				t.Errorf("report prints %d CPU figures, want 3:\n%s", n, out.String())
			}
		}
	})
}

// BenchmarkOutbox runs the whole bench once per dialect and reports its
// figures as metrics; b.N is ignored beyond the first run.
//
//	go test ./lab/outboxbench -run '^$' -bench . -benchtime 1x
func BenchmarkOutbox(b *testing.B) {
	for _, d := range sqldbtest.Dialects {
		b.Run(string(d), func(b *testing.B) {
			cfg := config(b, d)
			var rep outboxbench.Report
			for b.Loop() {
				var err error
				if rep, err = outboxbench.Run(context.Background(), cfg); err != nil {
					b.Fatal(err)
				}
			}
			b.Log(rep.Setup)
			b.ReportMetric(rep.Baseline, "no-outbox-tx/s")
			b.ReportMetric(rep.Writes, "outbox-writes-tx/s")
			b.ReportMetric(rep.EndToEnd, "e2e-events/s")
			b.ReportMetric(float64(rep.P50.Microseconds()), "p50-µs")
			b.ReportMetric(float64(rep.P99.Microseconds()), "p99-µs")
			b.ReportMetric(float64(rep.Max.Microseconds()), "max-µs")
			b.ReportMetric(rep.Drain, "drain-events/s")
		})
	}
}

// TestValidate: a setting that cannot run is refused before anything
// starts, naming the setting; zero values take the defaults.
func TestValidate(t *testing.T) {
	if err := (outboxbench.Config{}).Validate(); err != nil {
		t.Errorf("zero config: %v", err)
	}
	if err := (outboxbench.Config{Phases: []string{"drain", "throughput"}}).Validate(); err != nil {
		t.Errorf("known phases: %v", err)
	}
	for _, tc := range []struct {
		cfg  outboxbench.Config
		want string
	}{
		{outboxbench.Config{Writers: -1}, "Writers must not be negative"},
		{outboxbench.Config{Duration: -time.Second}, "Duration must not be negative"},
		{outboxbench.Config{Rate: -5}, "Rate must not be negative"},
		{outboxbench.Config{LatencyDuration: -time.Second}, "LatencyDuration must not be negative"},
		{outboxbench.Config{Backlog: -1}, "Backlog must not be negative"},
		{outboxbench.Config{Outage: -time.Second}, "Outage must not be negative"},
		{outboxbench.Config{Phases: []string{"latency", "warmup"}}, `Phases has an unknown phase "warmup" (throughput, latency, drain, outage)`},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
		if _, ok := errors.AsType[*outboxbench.SettingError](err); !ok {
			t.Errorf("%+v: %T, want a *SettingError", tc.cfg, err)
		}
		// Run refuses it too, before opening anything (the URLs are empty).
		if _, err := outboxbench.Run(context.Background(), tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Run(%+v): %v, want %q", tc.cfg, err, tc.want)
		}
	}
}
