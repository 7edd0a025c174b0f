-- +goose Up
-- Contracts cancelled before they were registered: a saga's compensation
-- that overtook its action. A late registration of such an id is refused.
CREATE TABLE contract_tombstone (
    id         TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);

-- +goose Down
DROP TABLE contract_tombstone;
