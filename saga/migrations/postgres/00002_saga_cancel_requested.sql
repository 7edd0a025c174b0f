-- +goose Up
-- Running sagas asked to cancel: orchestrators read this before each step
-- (one read shared by all the steps about to start). It is nearly always
-- empty, so the read costs the same however many sagas the log holds.
CREATE INDEX saga_cancel_requested ON saga (id) WHERE cancel_reason <> '' AND state = 'running';

-- +goose Down
DROP INDEX saga_cancel_requested;
