-- +goose Up
-- audit_log is common data every service produces; it is owned by the
-- audit service, its only writer. Services queue their records on a
-- JetStream work queue (fire and forget); audit stores each record once,
-- by its id.
CREATE TABLE audit_log (
    id          TEXT PRIMARY KEY,
    service     TEXT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id   TEXT NOT NULL,
    request_id  TEXT NOT NULL DEFAULT '',
    at          BIGINT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '',
    received_at BIGINT NOT NULL
);
CREATE INDEX audit_log_entity ON audit_log (entity_type, entity_id, at);
CREATE INDEX audit_log_at ON audit_log (at);

-- +goose Down
DROP TABLE audit_log;
