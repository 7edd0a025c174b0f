-- +goose Up
-- The outbox churns: every row is inserted, updated once and deleted soon
-- after. Vacuum it early, or the relay's scan of pending rows wades
-- through dead tuples.
ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.01);
ALTER TABLE outbox_aggregate SET (autovacuum_vacuum_scale_factor = 0.02);

-- +goose Down
ALTER TABLE outbox RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold, autovacuum_vacuum_insert_scale_factor);
ALTER TABLE outbox_aggregate RESET (autovacuum_vacuum_scale_factor);
