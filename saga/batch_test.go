package saga_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sysops-squad/sysops/saga"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

// batchParticipant answers batches of calls, noting their sizes and keys.
type batchParticipant struct {
	mu      sync.Mutex
	sizes   []int
	keys    map[string]int
	undone  map[string]bool // saga ids whose step a was compensated
	largest int
}

func (p *batchParticipant) note(calls []saga.Call) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sizes = append(p.sizes, len(calls))
	p.largest = max(p.largest, len(calls))
	if p.keys == nil {
		p.keys = map[string]int{}
	}
	for _, c := range calls {
		p.keys[c.Key]++
	}
}

func TestBatchedSteps(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := newDB(t, d)
		p := &batchParticipant{undone: map[string]bool{}}
		type in struct{ N int }
		// a answers each call with its own saga id; b refuses odd inputs,
		// after checking that it sees a's output for the same saga.
		a := saga.Step{Name: "a",
			ActionBatch: func(ctx context.Context, calls []saga.Call) ([]saga.Result, error) {
				p.note(calls)
				time.Sleep(5 * time.Millisecond) // a participant's round trip: later calls gather meanwhile
				out := make([]saga.Result, len(calls))
				for i, c := range calls {
					out[i].Output = json.RawMessage(fmt.Sprintf(`{"for":%q}`, c.SagaID))
				}
				return out, nil
			},
			CompensateBatch: func(ctx context.Context, calls []saga.Call) ([]saga.Result, error) {
				p.note(calls)
				p.mu.Lock()
				defer p.mu.Unlock()
				for _, c := range calls {
					p.undone[c.SagaID] = true
				}
				return make([]saga.Result, len(calls)), nil
			}}
		b := saga.Step{Name: "b",
			ActionBatch: func(ctx context.Context, calls []saga.Call) ([]saga.Result, error) {
				p.note(calls)
				out := make([]saga.Result, len(calls))
				for i, c := range calls {
					var v in
					var got struct{ For string }
					if err := c.Decode(&v); err != nil || !c.Output("a", &got) || got.For != c.SagaID {
						out[i].Err = saga.Reject(fmt.Errorf("call %+v: input %v, a's output %q", c, err, got.For))
						continue
					}
					if v.N%2 == 1 {
						out[i].Err = saga.Reject(fmt.Errorf("odd %d", v.N))
					}
				}
				return out, nil
			}}
		def := saga.Definition{Name: "batched", Version: 1, Steps: []saga.Step{a, b}}
		o := start(t, db, saga.Config{MaxBatch: 8}, def)

		const n = 40
		states := make([]saga.Saga, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { states[i] = run(t, o, "batched", in{N: i}) })
		}
		wg.Wait()
		for i, s := range states {
			want := saga.Committed
			if i%2 == 1 {
				want = saga.Compensated
			}
			if s.State != want {
				t.Errorf("saga %d: %s (%s), want %s", i, s.State, s.Reason, want)
				continue
			}
			var got struct{ For string }
			if err := json.Unmarshal(s.Steps[0].Output, &got); err != nil || got.For != s.ID {
				t.Errorf("saga %d got step a's output %s, which belongs to another saga", i, s.Steps[0].Output)
			}
			if undone := p.undone[s.ID]; undone != (i%2 == 1) {
				t.Errorf("saga %d: compensated %v", i, undone)
			}
		}
		st := o.Stats()
		// 40 calls of a, 40 of b, 20 compensations of a.
		if st.BatchedCalls != 100 || st.Batches >= st.BatchedCalls {
			t.Errorf("stats = %+v: want 100 calls in fewer batches", st)
		}
		if p.largest > 8 {
			t.Errorf("a batch of %d calls; MaxBatch is 8", p.largest)
		}
		for k, c := range p.keys {
			if c != 1 {
				t.Errorf("key %s called %d times", k, c)
			}
		}
		t.Logf("%d calls in %d batches, sizes %v", st.BatchedCalls, st.Batches, p.sizes)
	})
}

func TestFailedBatchRetriesItsCalls(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		db := newDB(t, d)
		var calls atomic.Int64
		flaky := saga.Step{Name: "flaky",
			ActionBatch: func(ctx context.Context, cs []saga.Call) ([]saga.Result, error) {
				switch calls.Add(1) {
				case 1:
					panic("participant bug")
				case 2:
					return nil, nil // too few results
				case 3:
					return nil, errors.New("connection refused")
				}
				return make([]saga.Result, len(cs)), nil
			},
			Retry: saga.RetryPolicy{MaxAttempts: 5, Initial: time.Millisecond, Max: 2 * time.Millisecond}}
		o := start(t, db, saga.Config{}, saga.Definition{Name: "f", Version: 1, Steps: []saga.Step{flaky}})
		s := run(t, o, "f", nil)
		if s.State != saga.Committed || s.Steps[0].Attempts != 4 {
			t.Fatalf("saga = %+v, want committed at the fourth attempt", s)
		}

		// A batch that keeps failing uses up each call's budget, and the
		// saga compensates.
		calls.Store(10)
		down := flaky
		down.Name = "down"
		down.ActionBatch = func(context.Context, []saga.Call) ([]saga.Result, error) {
			return nil, errors.New("connection refused")
		}
		o2 := start(t, db, saga.Config{BreakerFailures: 100}, saga.Definition{Name: "g", Version: 1, Steps: []saga.Step{down}})
		s = run(t, o2, "g", nil)
		if s.State != saga.Compensated || s.Steps[0].Attempts != 5 || s.Steps[0].LastError != "connection refused" {
			t.Fatalf("saga = %+v, want compensated after 5 attempts", s)
		}
	})
}
