package audit_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/internal/svc"
	"github.com/sysops-squad/sysops/internal/svctest"
	"github.com/sysops-squad/sysops/natsjs"
	"github.com/sysops-squad/sysops/natsjs/brokertest"
	"github.com/sysops-squad/sysops/services/audit"
	"github.com/sysops-squad/sysops/services/customer"
	"github.com/sysops-squad/sysops/sqldb"
	"github.com/sysops-squad/sysops/sqldb/sqldbtest"
)

type records struct {
	Records []svc.AuditRecord `json:"records"`
}

func query(t *testing.T, env *svctest.Env, q string) []svc.AuditRecord {
	t.Helper()
	var rs records
	r := svctest.Do(t, "GET", env.URL(audit.Name)+"/audit?"+q, nil)
	if r.Status != 200 {
		t.Fatalf("audit query %s: %d %s", q, r.Status, r.Body)
	}
	r.Decode(t, &rs)
	return rs.Records
}

func register(t *testing.T, env *svctest.Env, n int) customer.Customer {
	t.Helper()
	r := svctest.Do(t, "POST", env.URL(customer.Name)+"/customers",
		map[string]string{"name": fmt.Sprint("Customer ", n), "email": fmt.Sprintf("c%d@example.com", n), "zip": "10001"},
		svc.ActorHeader, "alice", svc.RequestIDHeader, fmt.Sprint("req-", n))
	if r.Status != 201 {
		t.Fatalf("register: %d %s", r.Status, r.Body)
	}
	var c customer.Customer
	r.Decode(t, &c)
	return c
}

func TestRecordsArriveOnce(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env := svctest.New(t, d, audit.Spec(), customer.Spec())
		c := register(t, env, 1)
		var got []svc.AuditRecord
		svctest.Eventually(t, "the audit record", func() bool {
			got = query(t, env, "entity_type=customer&entity_id="+c.ID)
			return len(got) > 0
		})
		rec := got[0]
		if len(got) != 1 || rec.Service != "customer" || rec.Action != "customer.registered" || rec.Actor != "alice" ||
			rec.RequestID != "req-1" || time.Since(rec.At) > time.Minute {
			t.Errorf("records = %+v", got)
		}
		if rs := query(t, env, "request_id=req-1&service=customer"); len(rs) != 1 {
			t.Errorf("by request id: %d records", len(rs))
		}

		// The same record queued twice (past the broker's de-duplication)
		// is stored once; a malformed one is dead-lettered.
		b := brokertest.Connect(t, env.NATS)
		data := fmt.Appendf(nil, `{"id":%q,"service":"customer","actor":"alice","action":"customer.registered","entity_type":"customer","entity_id":%q,"at":"2026-11-24T00:00:00Z"}`, rec.ID, c.ID)
		ev := sysops.Event{ID: rec.ID, Source: "/test", Type: svc.AuditEventType, Data: data}
		m, err := natsjs.EventMessage(ev)
		if err != nil {
			t.Fatal(err)
		}
		m.ID = "second-copy"
		if _, err := b.Publish(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		bad := sysops.Event{ID: "bad-record", Source: "/test", Type: svc.AuditEventType, Data: []byte(`{"id":"x"}`)}
		if m, err = natsjs.EventMessage(bad); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Publish(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		dls := brokertest.WaitDeadLetters(t, b, 1)
		if dls[0].OriginalID != "bad-record" {
			t.Errorf("dead letter = %+v", dls[0])
		}
		if rs := query(t, env, "entity_id="+c.ID); len(rs) != 1 {
			t.Errorf("after a duplicate: %d records, want 1", len(rs))
		}
		svctest.WantError(t, "bad query", svctest.Do(t, "GET", env.URL(audit.Name)+"/audit?who=me", nil), 400, "who")
	})
}

// TestRecordsSentWhileAuditIsDown: the queue keeps them until audit is
// back, and each is stored once.
func TestRecordsSentWhileAuditIsDown(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env := svctest.New(t, d, audit.Spec(), customer.Spec())
		env.Stop(audit.Name)
		var ids []string
		for i := range 5 {
			ids = append(ids, register(t, env, i).ID) // the callers never wait for audit
		}
		env.Restart(audit.Name)
		svctest.Eventually(t, "records sent while audit was down", func() bool {
			return len(query(t, env, "service=customer")) >= len(ids)
		})
		time.Sleep(100 * time.Millisecond)
		all := query(t, env, "service=customer")
		seen := map[string]int{}
		for _, r := range all {
			seen[r.EntityID]++
		}
		for _, id := range ids {
			if seen[id] != 1 {
				t.Errorf("customer %s has %d audit records, want 1", id, seen[id])
			}
		}
		if len(all) != len(ids) {
			t.Errorf("%d records, want %d", len(all), len(ids))
		}
	})
}

// TestSkipParkedRecords: a record whose predecessor never comes (purged
// from its producer's outbox, say) waits, parked, until an operator skips
// the gap through the ops endpoints.
func TestSkipParkedRecords(t *testing.T) {
	sqldbtest.Run(t, func(t *testing.T, d sqldb.Dialect) {
		env := svctest.New(t, d, audit.Spec())
		b := brokertest.Connect(t, env.NATS)
		data := []byte(`{"id":"r2","service":"billing","actor":"alice","action":"billing.charged","entity_type":"account","entity_id":"a1","at":"2026-11-24T00:00:00Z"}`)
		ev := sysops.Event{ID: "r2", Source: "/test", Type: svc.AuditEventType, Data: data,
			AggregateType: "audit", AggregateID: "billing/account/a1", Sequence: 2}
		m, err := natsjs.EventMessage(ev)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Publish(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		base := env.URL(audit.Name) + "/ops/inbox"
		var parked struct {
			Parked []struct {
				Sequence int64
				Waiting  int64 `json:"waiting_for"`
			}
		}
		svctest.Eventually(t, "the record parked", func() bool {
			svctest.Do(t, "GET", base+"/parked", nil).Decode(t, &parked)
			return len(parked.Parked) == 1
		})
		if p := parked.Parked[0]; p.Sequence != 2 || p.Waiting != 1 {
			t.Errorf("parked = %+v, want #2 waiting for #1", p)
		}
		if rs := query(t, env, "entity_id=a1"); len(rs) != 0 {
			t.Fatalf("a parked record is visible: %+v", rs)
		}
		svctest.WantError(t, "no aggregate", svctest.Do(t, "POST", base+"/skip", map[string]string{}), 400, "aggregate_type")
		r := svctest.Do(t, "POST", base+"/skip", map[string]string{"aggregate_type": "audit", "aggregate_id": "billing/account/a1"})
		var g struct{ From, To, Applied int64 }
		if r.Decode(t, &g); r.Status != 200 || g.From != 1 || g.To != 1 || g.Applied != 1 {
			t.Errorf("skip = %d %s, want #1 skipped and #2 applied", r.Status, r.Body)
		}
		if rs := query(t, env, "entity_id=a1"); len(rs) != 1 || rs[0].ID != "r2" {
			t.Errorf("records after the skip = %+v, want r2", rs)
		}
		svctest.WantError(t, "nothing parked", svctest.Do(t, "POST", base+"/skip",
			map[string]string{"aggregate_type": "audit", "aggregate_id": "billing/account/a1"}), 404, "nothing parked")
	})
}
