package inbox_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sysops-squad/sysops/inbox"
	"github.com/sysops-squad/sysops/natsjs"
	"github.com/sysops-squad/sysops/natsjs/brokertest"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

// BenchmarkConsumerDrain measures how fast one consumer applies a backlog
// through the inbox: 20,000 events of 1,000 aggregates waiting in the
// stream, each applied as one row insert, in batches of up to 512.
//
//	go test ./inbox -run '^$' -bench ConsumerDrain -benchtime 1x
func BenchmarkConsumerDrain(b *testing.B) {
	const events, aggregates, maxBatch = 20_000, 1_000, 512
	for _, d := range sqldbtest.Dialects {
		b.Run(string(d), func(b *testing.B) {
			ctx := context.Background()
			b.Logf("setup: %s, embedded JetStream (file store), %d events of %d aggregates waiting, one consumer, batches of up to %d, effect = 1 row insert",
				d, events, aggregates, maxBatch)
			var rate float64
			for b.Loop() {
				rate = drain(b, ctx, d, events, aggregates, maxBatch)
			}
			b.ReportMetric(rate, "events/s")
		})
	}
}

func drain(b *testing.B, ctx context.Context, d sqldb.Dialect, events, aggregates, maxBatch int) float64 {
	b.StopTimer()
	db := newDB(b, d)
	broker := brokertest.Connect(b, brokertest.RunServer(b))
	if err := broker.EnsureStream(ctx, natsjs.ServiceStream("test")); err != nil {
		b.Fatal(err)
	}
	msgs := make([]natsjs.Message, 0, events)
	for i := range events {
		m, err := natsjs.EventMessage(ev(fmt.Sprint("e", i), fmt.Sprint("agg", i%aggregates), int64(i/aggregates+1)))
		if err != nil {
			b.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	for chunk := 0; chunk < events; chunk += 1000 {
		_, errs := broker.PublishBatch(ctx, msgs[chunk:min(chunk+1000, events)])
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	c, err := inbox.NewConsumer(db, broker, inbox.Config{Name: "drain", Stream: "SYSOPS_TEST", MaxBatch: maxBatch,
		Handlers: map[string]inbox.ApplyFunc{"sysops.test.happened.v1": record}})
	if err != nil {
		b.Fatal(err)
	}
	b.StartTimer()
	start := time.Now()
	if err := c.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer c.Stop()
	deadline := start.Add(2 * time.Minute)
	for {
		var n int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM effect`).Scan(&n); err != nil {
			b.Fatal(err)
		}
		if n >= events {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d events applied in 2 minutes", n, events)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return float64(events) / time.Since(start).Seconds()
}
