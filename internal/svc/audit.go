package svc

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/natsjs"
	"github.com/sysops-squad/sysops/outbox"
)

// Audit records travel on a JetStream work queue that the audit service
// alone consumes: every service writes them, only audit stores them.
const (
	AuditStreamName = "SYSOPS_AUDIT"
	AuditEventType  = "sysops.audit.recorded.v1"
)

// AuditStream is the durable work queue of audit records. Every service
// ensures it at start, so records can be queued while audit is down.
func AuditStream() natsjs.StreamSpec {
	return natsjs.StreamSpec{Name: AuditStreamName, Subjects: []string{"sysops.audit.>"}, WorkQueue: true}
}

// Streams returns the streams a service publishes to: its own and the
// audit queue.
func Streams(service string) []natsjs.StreamSpec {
	return []natsjs.StreamSpec{natsjs.ServiceStream(service), AuditStream()}
}

// AuditRecord is one entry of the audit log: who did what to which
// entity, when, in which request.
type AuditRecord struct {
	ID         string          `json:"id"`
	Service    string          `json:"service"`
	Actor      string          `json:"actor"`
	Action     string          `json:"action"`
	EntityType string          `json:"entity_type"`
	EntityID   string          `json:"entity_id"`
	RequestID  string          `json:"request_id,omitempty"`
	At         time.Time       `json:"at"`
	Detail     json.RawMessage `json:"detail,omitempty"`
}

// Audit queues an audit record inside the caller's transaction, through
// the service's outbox: the record leaves if and only if the change it
// describes commits, and the caller never waits for the audit service
// (fire and forget). Records are ordered per service and entity. detail
// may be nil.
func Audit(ctx context.Context, tx *sql.Tx, service, action, entityType, entityID string, detail any) error {
	rec := AuditRecord{
		ID: outbox.NewID(), Service: service, Actor: Actor(ctx), Action: action,
		EntityType: entityType, EntityID: entityID, RequestID: RequestID(ctx), At: time.Now().UTC(),
	}
	if detail != nil {
		b, err := json.Marshal(detail)
		if err != nil {
			return fmt.Errorf("audit %s: %w", action, err)
		}
		rec.Detail = b
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("audit %s: %w", action, err)
	}
	return outbox.Write(ctx, tx, sysops.Event{
		ID: rec.ID, Source: "/sysops/" + service, Type: AuditEventType, Subject: entityID, Time: rec.At,
		Data: data, AggregateType: "audit", AggregateID: service + "/" + entityType + "/" + entityID,
		CorrelationID: rec.RequestID,
	})
}

// Emit writes one domain event of the service to the outbox inside tx.
func Emit(ctx context.Context, tx *sql.Tx, service, eventType, aggregateType, aggregateID string, data any) error {
	b, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("event %s: %w", eventType, err)
	}
	return outbox.Write(ctx, tx, sysops.Event{
		Source: "/sysops/" + service, Type: eventType, Subject: aggregateID, Data: b,
		AggregateType: aggregateType, AggregateID: aggregateID, CorrelationID: RequestID(ctx),
	})
}
