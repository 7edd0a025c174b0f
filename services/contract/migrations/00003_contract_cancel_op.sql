-- +goose Up
-- Which request cancelled a contract (its op id; empty for a cancel that
-- named none), so that the compensation of a cancellation undoes that
-- cancellation only, and a second request to cancel is refused.
ALTER TABLE contract ADD COLUMN cancel_op TEXT NOT NULL DEFAULT '';
-- The op ids of cancellations undone (or found with nothing to undo) by
-- their compensation: the late arrival of such a cancellation is refused.
CREATE TABLE contract_cancel_undone (
    id         TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);

-- +goose Down
DROP TABLE contract_cancel_undone;
ALTER TABLE contract DROP COLUMN cancel_op;
