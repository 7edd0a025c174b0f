-- +goose Up
-- The durable saga log. Times are microseconds since the Unix epoch.
CREATE TABLE saga (
    id               TEXT PRIMARY KEY,
    definition       TEXT NOT NULL,
    version          INTEGER NOT NULL,
    input            TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('running', 'compensating', 'committed', 'compensated', 'needs_attention', 'resolved')),
    reason           TEXT NOT NULL DEFAULT '',
    last_error       TEXT NOT NULL DEFAULT '',
    cancel_reason    TEXT NOT NULL DEFAULT '',
    deadline_at      BIGINT NOT NULL,
    next_run_at      BIGINT NOT NULL,
    lease_owner      TEXT NOT NULL DEFAULT '',
    lease_until      BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    finished_at      BIGINT
);
CREATE INDEX saga_runnable ON saga (next_run_at) WHERE state IN ('running', 'compensating');
CREATE INDEX saga_state ON saga (state, updated_at);

-- One row per step of each saga, written before each call and after it
-- returns.
CREATE TABLE saga_step (
    saga_id       TEXT NOT NULL REFERENCES saga (id),
    idx           INTEGER NOT NULL,
    name          TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed', 'compensating', 'compensated', 'skipped')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    comp_attempts INTEGER NOT NULL DEFAULT 0,
    output        TEXT NOT NULL DEFAULT '',
    last_error    TEXT NOT NULL DEFAULT '',
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (saga_id, idx)
);

-- +goose Down
DROP TABLE saga_step;
DROP TABLE saga;
