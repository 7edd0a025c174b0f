-- +goose Up
-- ticket is the customer-facing half of the old shared ticket table (joint
-- ownership resolved by a table split): only the ticket service writes it.
-- The expert-facing half, ticket_assignment, belongs to assignment and is
-- linked by the ticket id.
CREATE TABLE ticket (
    id          TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    description TEXT NOT NULL,
    priority    TEXT NOT NULL CHECK (priority IN ('low', 'medium', 'high', 'critical')),
    skill       TEXT NOT NULL,
    zip         TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('open', 'assigned', 'completed', 'cancelled')),
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX ticket_customer ON ticket (customer_id, created_at);
CREATE INDEX ticket_status ON ticket (status);

-- +goose Down
DROP TABLE ticket;
