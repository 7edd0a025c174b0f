-- +goose Up
-- A customer's profile can be closed (the compensation of a registration
-- that did not complete).
ALTER TABLE customer ADD COLUMN status TEXT NOT NULL DEFAULT 'active';

-- Customers closed before they were created: a late registration of such
-- an id is refused.
CREATE TABLE customer_tombstone (
    id         TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);

-- Changes of open_tickets made by an operation id (a saga step), so that
-- each applies once and can be undone once — and an undo that arrives
-- before its change voids it.
CREATE TABLE open_tickets_op (
    op_id       TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    delta       INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('applied', 'undone', 'voided')),
    updated_at  BIGINT NOT NULL
);

-- +goose Down
DROP TABLE open_tickets_op;
DROP TABLE customer_tombstone;
ALTER TABLE customer DROP COLUMN status;
