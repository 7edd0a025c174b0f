package outbox_test

// The crash test: a writer process commits business rows with events while
// the relay and consumer processes are killed with SIGKILL at random
// moments and restarted, many times. At the end every committed event has
// taken effect exactly once, in per-aggregate order, and nothing is left
// pending. The processes are this test binary, re-executed in a role.

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/inbox"
	"github.com/sysops-squad/sysops/natsjs"
	"github.com/sysops-squad/sysops/natsjs/brokertest"
	"github.com/sysops-squad/sysops/outbox"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

const (
	roleEnv       = "OUTBOX_CRASH_ROLE"
	producerEnv   = "OUTBOX_CRASH_PRODUCER"
	consumerEnv   = "OUTBOX_CRASH_CONSUMER"
	natsEnv       = "OUTBOX_CRASH_NATS"
	countEnv      = "OUTBOX_CRASH_COUNT"
	crashStream   = "SYSOPS_CRASH"
	crashAggs     = 50
	crashWriters  = 4
	crashConsumer = "crash-effects"
	crashRate     = 800 // events per second, all writers together
)

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		if err := runRole(role); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", role, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runRole(role string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	switch role {
	case "writer":
		return runWriter(ctx)
	case "relay":
		return runRelay(ctx)
	case "consumer":
		return runConsumer(ctx)
	}
	return fmt.Errorf("unknown role %q", role)
}

func runWriter(ctx context.Context) error {
	db, err := sqldb.Open(ctx, os.Getenv(producerEnv))
	if err != nil {
		return err
	}
	defer db.Close()
	n, _ := strconv.Atoi(os.Getenv(countEnv))
	// Paced, so that the kills land while events are in flight.
	tick := time.NewTicker(time.Second / crashRate)
	defer tick.Stop()
	var wg sync.WaitGroup
	errs := make(chan error, crashWriters)
	for w := range crashWriters {
		wg.Go(func() {
			for i := w; i < n; i += crashWriters {
				<-tick.C
				id := fmt.Sprint("order-", i)
				err := sqldb.RunInTx(ctx, db, func(tx *sql.Tx) error {
					if _, err := tx.ExecContext(ctx, `INSERT INTO orders (id) VALUES ($1)`, id); err != nil {
						return err
					}
					return outbox.Write(ctx, tx, sysops.Event{
						ID: id, Source: "/crash/writer", Type: "sysops.crash.ordered.v1",
						AggregateType: "customer", AggregateID: fmt.Sprint("cust-", i%crashAggs),
						Data: json.RawMessage(fmt.Sprintf(`{"order":%d}`, i)),
					})
				})
				if err != nil {
					errs <- fmt.Errorf("%s: %w", id, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// connectRole opens the database named by the environment variable dbEnv
// and connects to the broker, for a role process.
func connectRole(ctx context.Context, dbEnv string) (*sqldb.DB, *natsjs.Broker, error) {
	db, err := sqldb.Open(ctx, os.Getenv(dbEnv))
	if err != nil {
		return nil, nil, err
	}
	b, err := natsjs.Connect(ctx, natsjs.Config{URL: os.Getenv(natsEnv)})
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	return db, b, nil
}

func runRelay(ctx context.Context) error {
	db, b, err := connectRole(ctx, producerEnv)
	if err != nil {
		return err
	}
	defer db.Close()
	defer b.Close()
	r, err := outbox.NewRelay(db, b, outbox.RelayConfig{
		PollInterval: 50 * time.Millisecond, LeaseTTL: time.Second, BatchSize: 200,
		Backoff: func(int) time.Duration { return 50 * time.Millisecond }, MaxAttempts: 1000,
	})
	if err != nil {
		return err
	}
	if err := r.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	r.Stop()
	return nil
}

func runConsumer(ctx context.Context) error {
	db, b, err := connectRole(ctx, consumerEnv)
	if err != nil {
		return err
	}
	defer db.Close()
	defer b.Close()
	c, err := inbox.NewConsumer(db, b, inbox.Config{
		Name: crashConsumer, Stream: crashStream, MaxBatch: 64,
		AckWait: time.Second, MaxDeliver: 1000, Backoff: func(int) time.Duration { return 50 * time.Millisecond },
		Handlers: map[string]inbox.ApplyFunc{"sysops.crash.ordered.v1": func(ctx context.Context, tx *sql.Tx, ev sysops.Event) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO effect (event_id, aggregate_id, seq) VALUES ($1, $2, $3)`,
				ev.ID, ev.AggregateID, ev.Sequence)
			return err
		}},
	})
	if err != nil {
		return err
	}
	if err := c.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	return c.Stop()
}

// child is a role process that the test kills and restarts.
type child struct {
	t    *testing.T
	role string
	env  []string
	cmd  *exec.Cmd
	done chan error
}

func (c *child) start() {
	c.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{roleEnv + "=" + c.role}, c.env...)...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.cmd, c.done = cmd, make(chan error, 1)
	go func() { c.done <- cmd.Wait() }()
}

func (c *child) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test runs real processes for several seconds")
	}
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		ctx := context.Background()
		producerURL, consumerURL := sqldbtest.URL(t, d), sqldbtest.URL(t, d)
		setup := func(url, set string, fsys fs.FS, ddl string) {
			db, err := sqldb.Open(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if _, err := sqldb.Migrate(ctx, db, set, fsys); err != nil {
				t.Fatal(err)
			}
			if _, err := db.ExecContext(ctx, ddl); err != nil {
				t.Fatal(err)
			}
		}
		setup(producerURL, outbox.MigrationSet, outbox.Migrations(), `CREATE TABLE orders (id TEXT PRIMARY KEY)`)
		key := "n INTEGER PRIMARY KEY"
		if d == sqldb.Postgres {
			key = "n BIGSERIAL PRIMARY KEY"
		}
		setup(consumerURL, inbox.MigrationSet, inbox.Migrations(), `CREATE TABLE effect (`+key+`, event_id TEXT NOT NULL, aggregate_id TEXT NOT NULL, seq BIGINT NOT NULL)`)

		srv := brokertest.RunServer(t)
		b := brokertest.Connect(t, srv)
		if err := b.EnsureStream(ctx, natsjs.StreamSpec{Name: crashStream, Subjects: []string{"sysops.crash.>"}}); err != nil {
			t.Fatal(err)
		}

		const events = 4000
		env := []string{producerEnv + "=" + producerURL, consumerEnv + "=" + consumerURL,
			natsEnv + "=" + srv.ClientURL(), countEnv + "=" + strconv.Itoa(events)}
		writer := &child{t: t, role: "writer", env: env}
		relay := &child{t: t, role: "relay", env: env}
		consumer := &child{t: t, role: "consumer", env: env}
		writer.start()
		relay.start()
		consumer.start()
		defer func() {
			for _, c := range []*child{relay, consumer} {
				_ = c.cmd.Process.Signal(syscall.SIGTERM)
				<-c.done
			}
		}()

		// Kill the relay and the consumer at random moments while the
		// writer works, and a few times after it finished.
		kills, inFlight := 0, 0
		writerDone := false
		for kills < 80 && (!writerDone || kills < 20) {
			select {
			case err := <-writer.done:
				if err != nil {
					t.Fatalf("writer failed: %v", err)
				}
				writerDone = true
			case <-time.After(time.Duration(50+rand.IntN(300)) * time.Millisecond):
			}
			victim := relay
			if rand.IntN(2) == 0 {
				victim = consumer
			}
			victim.kill()
			victim.start()
			kills++
			if !writerDone {
				inFlight++
			}
		}
		if !writerDone {
			if err := <-writer.done; err != nil {
				t.Fatalf("writer failed: %v", err)
			}
		}
		t.Logf("%d kills with SIGKILL, %d of them while the writer was writing", kills, inFlight)
		if inFlight < 10 {
			t.Errorf("only %d kills landed while events were being written; the test proves little", inFlight)
		}

		producer, err := sqldb.Open(ctx, producerURL)
		if err != nil {
			t.Fatal(err)
		}
		defer producer.Close()
		cons, err := sqldb.Open(ctx, consumerURL)
		if err != nil {
			t.Fatal(err)
		}
		defer cons.Close()
		count := func(db *sqldb.DB, q string) int {
			t.Helper()
			var n int
			if err := db.QueryRowContext(ctx, q).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		committed := count(producer, `SELECT count(*) FROM orders`)
		if committed != events {
			t.Fatalf("writer committed %d orders, want %d", committed, events)
		}
		deadline := time.Now().Add(90 * time.Second)
		for {
			pending := count(producer, `SELECT count(*) FROM outbox WHERE status <> 'sent'`)
			effects := count(cons, `SELECT count(DISTINCT event_id) FROM effect`)
			if pending == 0 && effects == committed {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after 90 s: %d outbox rows not sent, %d of %d events took effect", pending, effects, committed)
			}
			time.Sleep(100 * time.Millisecond) // waiting for other processes to finish their work
		}

		if dup := count(cons, `SELECT count(*) FROM (SELECT event_id FROM effect GROUP BY event_id HAVING count(*) > 1) d`); dup != 0 {
			t.Errorf("%d events took effect more than once", dup)
		}
		if n := count(cons, `SELECT count(*) FROM effect`); n != committed {
			t.Errorf("%d effects for %d committed events", n, committed)
		}
		if missing := count(producer, `SELECT count(*) FROM orders`) - count(cons, `SELECT count(DISTINCT event_id) FROM effect`); missing != 0 {
			t.Errorf("%d committed events never took effect", missing)
		}
		q, err := cons.QueryContext(ctx, `SELECT aggregate_id, seq FROM effect ORDER BY n`)
		if err != nil {
			t.Fatal(err)
		}
		defer q.Close()
		last := map[string]int64{}
		for q.Next() {
			var agg string
			var seq int64
			if err := q.Scan(&agg, &seq); err != nil {
				t.Fatal(err)
			}
			if seq != last[agg]+1 {
				t.Fatalf("%s: effect of #%d applied after #%d", agg, seq, last[agg])
			}
			last[agg] = seq
		}
		if dls, err := b.DeadLetters(ctx, 0, 10); err != nil || len(dls) != 0 {
			t.Errorf("dead letters: %v, %v", dls, err)
		}
	})
}
