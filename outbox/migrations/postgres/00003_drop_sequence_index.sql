-- +goose Up
-- An aggregate's sequence numbers are unique by construction: each is
-- taken from outbox_aggregate under its row lock. The unique index on
-- them only cost every write an index insert, and nothing reads by it.
ALTER TABLE outbox DROP CONSTRAINT IF EXISTS outbox_aggregate_type_aggregate_id_aggregate_seq_key;

-- +goose Down
ALTER TABLE outbox ADD CONSTRAINT outbox_aggregate_type_aggregate_id_aggregate_seq_key
    UNIQUE (aggregate_type, aggregate_id, aggregate_seq);
