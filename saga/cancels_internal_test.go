package saga

import (
	"context"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestCancelReaderSharesReadsAndMissesNothing: steps that ask while a read
// is under way share the next read, and that read starts after they asked,
// so a cancel request recorded before a step asks is always seen.
func TestCancelReaderSharesReadsAndMissesNothing(t *testing.T) {
	var mu sync.Mutex
	requests := map[string]string{}
	var reads atomic.Int32
	release := make(chan struct{})
	c := cancelReader{read: func(ctx context.Context) (map[string]string, error) {
		mu.Lock()
		snap := maps.Clone(requests) // what the database holds when the read starts
		mu.Unlock()
		if reads.Add(1) == 1 {
			<-release
		}
		return snap, nil
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	first := make(chan string, 1)
	go func() {
		r, _ := c.reason(ctx, "a")
		first <- r
	}()
	for reads.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	// The first read is under way; now saga b is asked to cancel, and
	// 20 steps ask, b's among them.
	mu.Lock()
	requests["b"] = "customer changed their mind"
	mu.Unlock()
	var wg sync.WaitGroup
	got := make([]string, 20)
	for i := range got {
		id := "other"
		if i == 7 {
			id = "b"
		}
		wg.Go(func() { got[i], _ = c.reason(ctx, id) })
	}
	for {
		c.mu.Lock()
		n := len(c.waiting)
		c.mu.Unlock()
		if n == 20 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if r := <-first; r != "" {
		t.Errorf("a: reason %q, want none", r)
	}
	if got[7] != "customer changed their mind" {
		t.Errorf("b asked after its cancel request was recorded, but got %q", got[7])
	}
	if n := reads.Load(); n != 2 {
		t.Errorf("%d reads for 21 asks in two waves, want 2", n)
	}
	// A caller that gives up does not wait for the read.
	gone, stop := context.WithCancel(ctx)
	stop()
	if _, err := c.reason(gone, "a"); err == nil {
		t.Error("reason with a cancelled context returned no error")
	}
}
