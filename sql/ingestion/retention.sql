-- name: prune_ingest_runs_bound
-- `db prune`: the first ingestion attempt started at or after :cutoff, in id order (ids are assigned
-- when an attempt starts, so they follow started_at). NULL when every attempt is older.
-- Served by: ingest_runs primary key (a walk from the oldest id that stops at the first attempt inside
-- the window).
-- example: cutoff=2025-03-01
-- plan: seqscan-ok SQLite shows the walk in id order (its INTEGER PRIMARY KEY, the rowid) as a SCAN; it stops at the first row inside the window (LIMIT 1)
SELECT MIN(r.id) AS id FROM (
    SELECT id FROM ingestion.ingest_runs
    WHERE started_at >= :cutoff
    ORDER BY id
    LIMIT 1
) AS r;

-- name: prune_ingest_runs
-- `db prune`: delete one batch of ingestion attempts started before :cutoff, with ids in
-- (:after_id, :below_id). Returns the ids deleted (the next batch starts after the largest). The batch
-- is deleted as an id range (up to its largest id), not `id IN (batch)`: PostgreSQL hashed that list and
-- read the whole table for every batch (caught by the query-plan gate).
-- Served by: ingest_runs primary key (the id range).
-- example: after_id=0 below_id=100000 cutoff=2025-03-01 batch=1000
DELETE FROM ingestion.ingest_runs
WHERE id > :after_id
  AND id <= (
      SELECT MAX(b.id) FROM (
          SELECT r.id FROM ingestion.ingest_runs AS r
          WHERE r.id > :after_id AND r.id < :below_id AND r.started_at < :cutoff
          ORDER BY r.id
          LIMIT :batch
      ) AS b
  )
  AND id < :below_id
  AND started_at < :cutoff
RETURNING id;

-- name: prune_count_ingest_runs
-- `db prune --dry-run`: how many ingestion attempts prune_ingest_runs would delete.
-- Served by: ingest_runs primary key (the id range).
-- example: below_id=100000 cutoff=2025-03-01
-- plan: seqscan-ok the dry run counts every attempt the prune would delete: reading them is the work
SELECT COUNT(*) AS n FROM ingestion.ingest_runs WHERE id < :below_id AND started_at < :cutoff;
