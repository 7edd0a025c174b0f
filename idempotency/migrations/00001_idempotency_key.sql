-- +goose Up
-- One row per Idempotency-Key a service has seen on a POST: the request's
-- fingerprint, and once the first request finished, its response. A row
-- with status 0 is in progress until locked_until (microseconds since the
-- Unix epoch); after that a repeat may take it over.
CREATE TABLE idempotency_key (
    idem_key      TEXT PRIMARY KEY,
    request_hash  TEXT NOT NULL,
    status        INTEGER NOT NULL DEFAULT 0,
    content_type  TEXT NOT NULL DEFAULT '',
    location      TEXT NOT NULL DEFAULT '',
    body          TEXT NOT NULL DEFAULT '',
    created_at    BIGINT NOT NULL,
    locked_until  BIGINT NOT NULL
);
CREATE INDEX idempotency_key_created ON idempotency_key (created_at);

-- +goose Down
DROP TABLE idempotency_key;
