-- +goose Up
-- The support plan the customer's profile shows ('' for none), kept by the
-- register-customer and cancel-support-plan workflows.
ALTER TABLE customer ADD COLUMN support_plan TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE customer DROP COLUMN support_plan;
