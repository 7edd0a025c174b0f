-- +goose Up
-- Every saga's row is updated once per step and then left for good, so
-- the log gathers dead row versions fast; their entries stay in the
-- indexes the orchestrators' polls read (sagas to resume, by state) until
-- a vacuum: at 50,000 finished sagas a poll read 50,000 dead entries.
-- Vacuum and analyze early rather than at the default 20% of the table.
ALTER TABLE saga SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02);

-- +goose Down
ALTER TABLE saga RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold, autovacuum_analyze_scale_factor);
