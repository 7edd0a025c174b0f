-- +goose Up
-- A saga's steps move into its own row, as a JSON array (see stepRow in
-- package saga): each log write is then one row, not the saga's row and
-- its steps' rows, and a saga is read back from one row.
ALTER TABLE saga ADD COLUMN steps TEXT NOT NULL DEFAULT '[]';
UPDATE saga SET steps = COALESCE((
    SELECT json_group_array(json_object('index', idx, 'name', name, 'status', status, 'attempts', attempts,
        'comp_attempts', comp_attempts, 'output', output, 'last_error', last_error, 'updated_at', updated_at) ORDER BY idx)
    FROM saga_step WHERE saga_id = saga.id), '[]');
DROP TABLE saga_step;

-- +goose Down
CREATE TABLE saga_step (
    saga_id       TEXT NOT NULL REFERENCES saga (id),
    idx           INTEGER NOT NULL,
    name          TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed', 'compensating', 'compensated', 'skipped')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    comp_attempts INTEGER NOT NULL DEFAULT 0,
    output        TEXT NOT NULL DEFAULT '',
    last_error    TEXT NOT NULL DEFAULT '',
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (saga_id, idx)
);
INSERT INTO saga_step (saga_id, idx, name, status, attempts, comp_attempts, output, last_error, updated_at)
SELECT saga.id, st.value ->> '$.index', st.value ->> '$.name', st.value ->> '$.status', st.value ->> '$.attempts',
    st.value ->> '$.comp_attempts', COALESCE(st.value ->> '$.output', ''), COALESCE(st.value ->> '$.last_error', ''),
    st.value ->> '$.updated_at'
FROM saga, json_each(saga.steps) st;
ALTER TABLE saga DROP COLUMN steps;
