-- +goose Up
-- customer is under single ownership: only the customer service writes it;
-- every other service reads it through customer's API.
CREATE TABLE customer (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    email        TEXT NOT NULL UNIQUE,
    zip          TEXT NOT NULL,
    open_tickets INTEGER NOT NULL DEFAULT 0 CHECK (open_tickets >= 0),
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

-- +goose Down
DROP TABLE customer;
