-- +goose Up
-- contract (support plans) is under single ownership: only the contract
-- service writes it. A customer has at most one active contract.
CREATE TABLE contract (
    id            TEXT PRIMARY KEY,
    customer_id   TEXT NOT NULL,
    plan          TEXT NOT NULL CHECK (plan IN ('basic', 'standard', 'premium')),
    status        TEXT NOT NULL CHECK (status IN ('active', 'cancelled')),
    started_at    BIGINT NOT NULL,
    cancelled_at  BIGINT,
    cancel_reason TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX contract_one_active ON contract (customer_id) WHERE status = 'active';
CREATE INDEX contract_customer ON contract (customer_id);

-- +goose Down
DROP TABLE contract;
