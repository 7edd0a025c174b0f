-- +goose Up
-- completion records each ticket completed through the Ticket Completion
-- service: only completion writes it.
CREATE TABLE completion (
    ticket_id    TEXT PRIMARY KEY,
    customer_id  TEXT NOT NULL,
    expert_id    TEXT NOT NULL,
    notes        TEXT NOT NULL,
    survey_id    TEXT NOT NULL,
    completed_at BIGINT NOT NULL
);

-- +goose Down
DROP TABLE completion;
