package natsjs

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"
)

// BenchmarkPublishBatch publishes batches of 100 events to an embedded
// server's file-store stream, reached in process and over loopback TCP,
// and reports the process's CPU time per message (server included: it is
// embedded), which the machine's other load does not inflate as it does
// wall time.
//
//	go test -run - -bench PublishBatch ./natsjs
func BenchmarkPublishBatch(b *testing.B) {
	for _, reach := range []string{"in-process", "tcp"} {
		b.Run(reach, func(b *testing.B) {
			ctx := context.Background()
			s, err := RunServer(ServerConfig{StoreDir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Shutdown()
			cfg := Config{URL: s.ClientURL()}
			if reach == "in-process" {
				cfg.InProcess = s
			}
			br, err := Connect(ctx, cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer br.Close()
			if br.InProcess() != (reach == "in-process") {
				b.Fatalf("connected to %s, want %s", br.nc.ConnectedAddr(), reach)
			}
			if err := br.EnsureStream(ctx, StreamSpec{Name: "BENCH", Subjects: []string{"bench.>"}}); err != nil {
				b.Fatal(err)
			}
			b.Logf("setup: embedded server (file store), %s, batches of 100 messages of 200 bytes, GOMAXPROCS from the machine", reach)
			data := make([]byte, 200)
			msgs := make([]Message, 100)
			var n int
			cpu0 := processCPU()
			b.ResetTimer()
			for b.Loop() {
				for i := range msgs {
					n++
					msgs[i] = Message{ID: fmt.Sprint("m", n), Subject: "bench.created", Data: data}
				}
				if _, errs := br.PublishBatch(ctx, msgs); errs != nil {
					for _, err := range errs {
						if err != nil {
							b.Fatal(err)
						}
					}
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(processCPU()-cpu0)/float64(n), "cpu-ns/msg")
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// processCPU is the user and system time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
