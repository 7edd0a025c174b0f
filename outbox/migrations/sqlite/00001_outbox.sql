-- +goose Up
-- Times are microseconds since the Unix epoch (UTC) in both dialects.
CREATE TABLE outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT NOT NULL UNIQUE,
    aggregate_type  TEXT NOT NULL,
    aggregate_id    TEXT NOT NULL,
    aggregate_seq   INTEGER NOT NULL,
    event_type      TEXT NOT NULL,
    subject         TEXT NOT NULL,
    payload         BLOB,
    headers         TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    sent_at         INTEGER,
    UNIQUE (aggregate_type, aggregate_id, aggregate_seq)
);
CREATE INDEX outbox_pending ON outbox (seq) WHERE status = 'pending';
CREATE INDEX outbox_dead ON outbox (aggregate_type, aggregate_id) WHERE status = 'dead';
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE status = 'sent';

-- The last sequence number given to each aggregate. Its row lock orders
-- concurrent writers of one aggregate.
CREATE TABLE outbox_aggregate (
    aggregate_type TEXT NOT NULL,
    aggregate_id   TEXT NOT NULL,
    last_seq       INTEGER NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id)
);

-- Which relay may publish (SQLite; PostgreSQL uses an advisory lock).
CREATE TABLE outbox_lease (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);

-- +goose Down
DROP TABLE outbox_lease;
DROP TABLE outbox_aggregate;
DROP TABLE outbox;
