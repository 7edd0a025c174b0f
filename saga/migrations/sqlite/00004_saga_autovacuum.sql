-- +goose Up
-- PostgreSQL tunes autovacuum for the saga log in this version; SQLite
-- reuses freed pages on its own. Kept so both dialects share version numbers.
SELECT 1;

-- +goose Down
SELECT 1;
