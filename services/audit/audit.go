// Package audit is the Audit service: the owner and only writer of
// audit_log. Every service queues its audit records (who did what to which
// entity, when, in which request) through its outbox onto the SYSOPS_AUDIT
// JetStream work queue, without waiting for audit; audit consumes the
// queue through an idempotent inbox and stores each record once, by its
// id. Records queued while audit is down wait in the queue until it is
// back.
//
//	GET /audit?entity_type=T&entity_id=I&service=S&actor=A&request_id=R&limit=N
//	    records, newest first
package audit

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"time"

	"github.com/sysops-squad/sysops"
	"github.com/sysops-squad/sysops/inbox"
	"github.com/sysops-squad/sysops/internal/host"
	"github.com/sysops-squad/sysops/internal/httpx"
	"github.com/sysops-squad/sysops/internal/svc"
	"github.com/sysops-squad/sysops/natsjs"
	"github.com/sysops-squad/sysops/sqldb"
)

// Name is the service's name.
const Name = "audit"

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations returns the service's schema migrations.
func Migrations() fs.FS { return svc.Migrations(migrations) }

// Spec describes the service to its host.
func Spec() host.Spec {
	return host.Spec{
		Name: Name, Migrations: Migrations(), Streams: []natsjs.StreamSpec{svc.AuditStream()},
		Start: func(ctx context.Context, deps host.Deps) (http.Handler, error) {
			if _, err := sqldb.Migrate(ctx, deps.DB, inbox.MigrationSet, inbox.Migrations()); err != nil {
				return nil, err
			}
			s := New(deps.DB, deps.Logger)
			c, err := inbox.NewConsumer(deps.DB, deps.Broker, inbox.Config{
				Name: "audit", Stream: svc.AuditStreamName, Logger: deps.Logger,
				Handlers: map[string]inbox.ApplyFunc{svc.AuditEventType: s.store},
			})
			if err != nil {
				return nil, err
			}
			if err := c.Start(ctx); err != nil {
				return nil, err
			}
			go func() {
				<-ctx.Done()
				_ = c.Stop()
			}()
			mux := http.NewServeMux()
			mux.Handle("/ops/inbox/", c.Handler("/ops/inbox"))
			mux.Handle("/", s.Handler())
			return mux, nil
		},
	}
}

// Service is the Audit service.
type Service struct {
	db     *sqldb.DB
	logger *slog.Logger
}

// New returns the service over its database.
func New(db *sqldb.DB, logger *slog.Logger) *Service {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Service{db: db, logger: logger}
}

// store writes one queued record; a record stored before is left alone.
func (s *Service) store(ctx context.Context, tx *sql.Tx, ev sysops.Event) error {
	var rec svc.AuditRecord
	if err := json.Unmarshal(ev.Data, &rec); err != nil {
		return inbox.Permanent(fmt.Errorf("audit record %s: %w", ev.ID, err))
	}
	var c svc.Check
	c.Required("id", rec.ID, 64)
	c.Required("service", rec.Service, 64)
	c.Required("action", rec.Action, 200)
	c.Required("entity_type", rec.EntityType, 64)
	c.Required("entity_id", rec.EntityID, 200)
	if err := c.Err(); err != nil {
		return inbox.Permanent(fmt.Errorf("audit record %s: %w", ev.ID, err))
	}
	detail := ""
	if len(rec.Detail) > 0 {
		detail = string(rec.Detail)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO audit_log (id, service, actor, action, entity_type, entity_id, request_id, at, detail, received_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING`,
		rec.ID, rec.Service, rec.Actor, rec.Action, rec.EntityType, rec.EntityID, rec.RequestID, svc.Micros(rec.At), detail,
		svc.Micros(time.Now()))
	return err
}

// Query selects audit records; empty fields do not filter.
type Query struct {
	EntityType, EntityID, Service, Actor, RequestID string
	Limit                                           int
}

// Records returns the records matching q, newest first.
func (s *Service) Records(ctx context.Context, q Query) ([]svc.AuditRecord, error) {
	where, args := "1 = 1", []any{q.Limit}
	for _, f := range []struct{ col, val string }{{"entity_type", q.EntityType}, {"entity_id", q.EntityID},
		{"service", q.Service}, {"actor", q.Actor}, {"request_id", q.RequestID}} {
		if f.val != "" {
			args = append(args, f.val)
			where += fmt.Sprintf(" AND %s = $%d", f.col, len(args))
		}
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id, service, actor, action, entity_type, entity_id, request_id, at, detail
		FROM audit_log WHERE `+where+` ORDER BY at DESC, id DESC LIMIT $1`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []svc.AuditRecord{}
	for rows.Next() {
		var r svc.AuditRecord
		var at int64
		var detail string
		if err := rows.Scan(&r.ID, &r.Service, &r.Actor, &r.Action, &r.EntityType, &r.EntityID, &r.RequestID, &at, &detail); err != nil {
			return nil, err
		}
		r.At = svc.FromMicros(at)
		if detail != "" {
			r.Detail = json.RawMessage(detail)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Handler returns the service's HTTP API.
func (s *Service) Handler() http.Handler {
	rt := svc.NewRouter(s.logger)
	rt.Handle("GET /audit", func(w http.ResponseWriter, r *http.Request) error {
		limit, err := httpx.Limit(r.URL.Query(), 100, 1000)
		if err != nil {
			return err
		}
		p := r.URL.Query()
		recs, err := s.Records(r.Context(), Query{EntityType: p.Get("entity_type"), EntityID: p.Get("entity_id"),
			Service: p.Get("service"), Actor: p.Get("actor"), RequestID: p.Get("request_id"), Limit: limit})
		if err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"records": recs})
		return nil
	}, "entity_type", "entity_id", "service", "actor", "request_id", "limit")
	return rt
}
