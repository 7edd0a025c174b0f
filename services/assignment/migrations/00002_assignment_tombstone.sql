-- +goose Up
-- Tickets released before they were assigned: a saga's compensation that
-- overtook its action. A late assignment of such a ticket is refused.
CREATE TABLE assignment_tombstone (
    id         TEXT PRIMARY KEY, -- the ticket id
    created_at BIGINT NOT NULL
);

-- +goose Down
DROP TABLE assignment_tombstone;
