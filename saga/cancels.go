package saga

import (
	"context"
	"sync"
	"time"
)

// cancelReader answers "has this saga been asked to cancel?" for every
// saga of an orchestrator with shared reads: a saga that asks while a read
// is under way waits for the next one, which starts after it asked, so it
// sees every cancel request committed before it asked, as a read of its
// own would. At concurrency 64 this is one statement for many steps
// instead of one per step.
type cancelReader struct {
	read func(ctx context.Context) (map[string]string, error)

	mu      sync.Mutex
	waiting []*cancelAsk
	busy    bool
}

// cancelReadTimeout bounds a read, so that a database that hangs fails
// the steps waiting for it instead of holding them.
const cancelReadTimeout = 10 * time.Second

type cancelAsk struct {
	id     string
	reason string
	err    error
	done   chan struct{}
}

// reason returns the cancel reason recorded for saga id, "" if none.
func (c *cancelReader) reason(ctx context.Context, id string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	a := &cancelAsk{id: id, done: make(chan struct{})}
	c.mu.Lock()
	c.waiting = append(c.waiting, a)
	if !c.busy {
		c.busy = true
		go c.run()
	}
	c.mu.Unlock()
	select {
	case <-a.done:
		return a.reason, a.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// run reads for the sagas waiting, again and again, until none is.
func (c *cancelReader) run() {
	for {
		c.mu.Lock()
		batch := c.waiting
		c.waiting = nil
		if len(batch) == 0 {
			c.busy = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), cancelReadTimeout)
		reasons, err := c.read(ctx)
		cancel()
		for _, a := range batch {
			a.reason, a.err = reasons[a.id], err
			close(a.done)
		}
	}
}
