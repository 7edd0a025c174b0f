-- +goose Up
-- Tickets cancelled before they were created: a saga's compensation that
-- overtook its action. A late create of such an id is refused.
CREATE TABLE ticket_tombstone (
    id         TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);

-- +goose Down
DROP TABLE ticket_tombstone;
