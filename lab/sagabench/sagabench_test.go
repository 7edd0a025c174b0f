package sagabench_test

import (
	"bytes"
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sysops-squad/sysops/lab/sagabench"
	"github.com/sysops-squad/sysops/natsjs/brokertest"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

func config(t testing.TB, d sqldb.Dialect) sagabench.Config {
	urls := map[string]string{}
	for _, s := range sagabench.Services {
		urls[s] = sqldbtest.URL(t, d)
	}
	return sagabench.Config{URLs: urls, NATSURL: brokertest.RunServer(t).ClientURL()}
}

// TestRun runs the bench briefly: every saga ends as its scenario expects
// (the outage scenario's too) and the report names its setup.
func TestRun(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		cfg := config(t, d)
		cfg.Concurrency, cfg.Duration, cfg.Outage = []int{1, 4}, 200*time.Millisecond, 500*time.Millisecond
		rep, err := sagabench.Run(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		// The outage scenario: sagas ran around it and every one ended;
		// a participant away for half a second costs none a compensation
		// (the saga's deadline is far off) nor a person's attention.
		// The calls that met the cut failed (some may be refused by the
		// breaker once it opens).
		if o := rep.Outage; o == nil || o.Sagas == 0 || o.Committed != o.Sagas || o.Concurrency != 4 || o.Longest <= 0 ||
			o.Away.Failed == 0 || o.Away.Failed > o.Away.Made {
			t.Errorf("outage scenario: %+v", rep.Outage)
		}
		if len(rep.Results) != 4 {
			t.Fatalf("results = %+v", rep.Results)
		}
		for _, r := range rep.Results {
			if r.Sagas == 0 || r.Unexpected != 0 || r.P99 < r.P50 {
				t.Errorf("result %+v", r)
			}
			// The machine's CPU per saga is read where it can be (Linux).
			if runtime.GOOS == "linux" && (r.CPU <= 0 || r.Busy <= 0 || r.Busy > 1) {
				t.Errorf("result %+v: no CPU figures", r)
			}
		}
		var out bytes.Buffer
		rep.Print(&out)
		if !strings.Contains(out.String(), "saga bench: ") || !strings.Contains(out.String(), "assignment refused") ||
			!strings.Contains(out.String(), "assignment away for 500ms") || !strings.Contains(out.String(), "calls to assignment while away: ") ||
			runtime.GOOS == "linux" && !strings.Contains(out.String(), "ms/saga, machine ") {
			t.Errorf("report:\n%s", out.String())
		}
	})
}

// BenchmarkSaga prints the same figures as `sysops bench saga` (SQLite;
// PostgreSQL when TEST_DATABASE_URL is set).
func BenchmarkSaga(b *testing.B) {
	for _, d := range []sqldb.Dialect{sqldb.SQLite, sqldb.Postgres} {
		b.Run(string(d), func(b *testing.B) {
			cfg := config(b, d)
			cfg.Duration = 2 * time.Second
			for b.Loop() {
				rep, err := sagabench.Run(context.Background(), cfg)
				if err != nil {
					b.Fatal(err)
				}
				var out bytes.Buffer
				rep.Print(&out)
				b.Log("\n" + out.String())
				for _, r := range rep.Results {
					if r.Concurrency == 64 && strings.Contains(r.Scenario, "committed") {
						b.ReportMetric(r.PerSecond, "sagas/s@64")
					}
				}
			}
		})
	}
}
