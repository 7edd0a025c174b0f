-- +goose Up
-- A replicated copy of location's zip_code table (common ownership,
-- reference data): read locally, written only by the refresher that
-- copies location's data, never by the service's own logic.
CREATE TABLE zip_replica (
    zip       TEXT PRIMARY KEY,
    city      TEXT NOT NULL,
    state     TEXT NOT NULL,
    latitude  DOUBLE PRECISION NOT NULL,
    longitude DOUBLE PRECISION NOT NULL
);

-- Which version of location's data the copy holds (its ETag) and when it
-- was last checked.
CREATE TABLE zip_replica_meta (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    etag         TEXT NOT NULL,
    rows_copied  INTEGER NOT NULL,
    refreshed_at BIGINT NOT NULL,
    checked_at   BIGINT NOT NULL
);

-- +goose Down
DROP TABLE zip_replica_meta;
DROP TABLE zip_replica;
