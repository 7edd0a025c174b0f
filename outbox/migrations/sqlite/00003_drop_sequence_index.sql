-- +goose Up
-- PostgreSQL drops the unique index on (aggregate_type, aggregate_id,
-- aggregate_seq) in this version. SQLite cannot drop a table's inline
-- constraint without rebuilding the table, and its writer is not the
-- bottleneck; kept so both dialects share version numbers.
SELECT 1;

-- +goose Down
SELECT 1;
