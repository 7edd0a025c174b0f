-- +goose Up
-- Accounts closed before they were opened: a saga's compensation that
-- overtook its action. A late opening of such an id is refused.
CREATE TABLE billing_account_tombstone (
    id         TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);

-- +goose Down
DROP TABLE billing_account_tombstone;
