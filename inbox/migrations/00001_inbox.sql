-- +goose Up
-- Times are microseconds since the Unix epoch (UTC).

-- Messages already applied, by consumer, for events without an aggregate
-- sequence. Pruned after the consumer's retention.
CREATE TABLE inbox (
    consumer     TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    processed_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, message_id)
);
CREATE INDEX inbox_processed_at ON inbox (processed_at);

-- The last sequence applied per aggregate, by consumer: de-duplicates and
-- orders events that carry an aggregate sequence.
CREATE TABLE inbox_aggregate (
    consumer       TEXT NOT NULL,
    aggregate_type TEXT NOT NULL,
    aggregate_id   TEXT NOT NULL,
    last_seq       BIGINT NOT NULL,
    parked         BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (consumer, aggregate_type, aggregate_id)
);

-- Events that arrived ahead of their predecessor, kept until it arrives.
CREATE TABLE inbox_parked (
    consumer       TEXT NOT NULL,
    aggregate_type TEXT NOT NULL,
    aggregate_id   TEXT NOT NULL,
    sequence       BIGINT NOT NULL,
    event          TEXT NOT NULL,
    parked_at      BIGINT NOT NULL,
    PRIMARY KEY (consumer, aggregate_type, aggregate_id, sequence)
);

-- +goose Down
DROP TABLE inbox_parked;
DROP TABLE inbox_aggregate;
DROP TABLE inbox;
