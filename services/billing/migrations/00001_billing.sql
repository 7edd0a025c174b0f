-- +goose Up
-- billing_account and charge are under single ownership: only the billing
-- service writes them. One account per customer.
CREATE TABLE billing_account (
    id                TEXT PRIMARY KEY,
    customer_id       TEXT NOT NULL UNIQUE,
    plan              TEXT NOT NULL,
    monthly_fee_cents INTEGER NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('open', 'closed')),
    opened_at         BIGINT NOT NULL,
    closed_at         BIGINT
);

-- Charges are positive; refunds negative.
CREATE TABLE charge (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES billing_account (id),
    kind         TEXT NOT NULL CHECK (kind IN ('subscription', 'refund')),
    amount_cents INTEGER NOT NULL,
    description  TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX charge_account ON charge (account_id, created_at);

-- +goose Down
DROP TABLE charge;
DROP TABLE billing_account;
