-- +goose Up
-- zip_code is reference data under common ownership: location is its only
-- writer; every other service reads it through location's API or keeps a
-- replicated copy.
CREATE TABLE zip_code (
    zip       TEXT PRIMARY KEY,
    city      TEXT NOT NULL,
    state     TEXT NOT NULL,
    latitude  DOUBLE PRECISION NOT NULL,
    longitude DOUBLE PRECISION NOT NULL
);
CREATE INDEX zip_code_lat_idx ON zip_code (latitude);

-- dataset records which version of the embedded data file was loaded.
CREATE TABLE dataset (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    version   TEXT NOT NULL,
    rows      INTEGER NOT NULL,
    loaded_at TEXT NOT NULL
);

-- +goose Down
DROP TABLE dataset;
DROP TABLE zip_code;
