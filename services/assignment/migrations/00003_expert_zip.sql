-- +goose Up
-- An assignment takes the least loaded expert with spare capacity in the
-- nearest zips: this index finds a zip's experts without reading every
-- expert. It leaves open_assignments out, so that taking and freeing
-- capacity stays an update that touches no index.
CREATE INDEX expert_zip ON expert (zip);

-- +goose Down
DROP INDEX expert_zip;
