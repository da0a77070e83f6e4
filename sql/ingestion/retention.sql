-- name: prune_ingest_runs_bound
-- `db prune`: the first ingestion attempt started at or after :cutoff, in id order (ids are assigned
-- when an attempt starts, so they follow started_at). NULL when every attempt is older.
-- Served by: ingest_runs primary key (a walk from the oldest id that stops at the first attempt inside
-- the window).
SELECT MIN(r.id) AS id FROM (
    SELECT id FROM ingestion.ingest_runs
    WHERE started_at >= :cutoff
    ORDER BY id
    LIMIT 1
) AS r;

-- name: prune_ingest_runs
-- `db prune`: delete one batch of ingestion attempts started before :cutoff, with ids in
-- (:after_id, :below_id). Returns the ids deleted (the next batch starts after the largest).
-- Served by: ingest_runs primary key (the id range).
DELETE FROM ingestion.ingest_runs
WHERE id IN (
    SELECT r.id FROM ingestion.ingest_runs AS r
    WHERE r.id > :after_id
      AND r.id < :below_id
      AND r.started_at < :cutoff
    ORDER BY r.id
    LIMIT :batch
)
RETURNING id;

-- name: prune_count_ingest_runs
-- `db prune --dry-run`: how many ingestion attempts prune_ingest_runs would delete.
-- Served by: ingest_runs primary key (the id range).
SELECT COUNT(*) AS n FROM ingestion.ingest_runs WHERE id < :below_id AND started_at < :cutoff;
