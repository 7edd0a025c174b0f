-- +goose Up
-- survey is written by the survey service alone. Ticket completion does not
-- write it: it delegates, sending the survey's data to survey's API.
CREATE TABLE survey (
    id          TEXT PRIMARY KEY,
    ticket_id   TEXT NOT NULL UNIQUE,
    customer_id TEXT NOT NULL,
    expert_id   TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('sent', 'answered')),
    rating      INTEGER CHECK (rating BETWEEN 1 AND 5),
    comment     TEXT NOT NULL DEFAULT '',
    sent_at     BIGINT NOT NULL,
    answered_at BIGINT
);
CREATE INDEX survey_customer ON survey (customer_id, sent_at);

-- +goose Down
DROP TABLE survey;
