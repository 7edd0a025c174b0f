-- +goose Up
-- expert and ticket_assignment are under single ownership: only the
-- assignment service writes them. ticket_assignment is the expert-facing
-- half of the old shared ticket table (joint ownership resolved by a table
-- split), linked to ticket by the ticket id.
CREATE TABLE expert (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    email            TEXT NOT NULL UNIQUE,
    skills           TEXT NOT NULL, -- comma-separated
    zip              TEXT NOT NULL,
    capacity         INTEGER NOT NULL CHECK (capacity > 0),
    open_assignments INTEGER NOT NULL DEFAULT 0 CHECK (open_assignments >= 0 AND open_assignments <= capacity),
    created_at       BIGINT NOT NULL
);

CREATE TABLE ticket_assignment (
    ticket_id        TEXT PRIMARY KEY,
    expert_id        TEXT NOT NULL REFERENCES expert (id),
    status           TEXT NOT NULL CHECK (status IN ('assigned', 'completed', 'released')),
    scheduled_for    BIGINT NOT NULL,
    completion_notes TEXT NOT NULL DEFAULT '',
    assigned_at      BIGINT NOT NULL,
    completed_at     BIGINT
);
CREATE INDEX ticket_assignment_expert ON ticket_assignment (expert_id, status);

-- +goose Down
DROP TABLE ticket_assignment;
DROP TABLE expert;
