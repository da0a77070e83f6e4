-- name: ingest_run_start
-- Open the journal row of one ingestion attempt; returns its id. Served by: ingest_runs primary key.
INSERT INTO ingestion.ingest_runs (source_id, run_id, started_at)
VALUES (:source_id, :run_id, :started_at)
RETURNING id;

-- name: ingest_run_finish
-- Close an attempt with its outcome and counts. Served by: ingest_runs primary key.
UPDATE ingestion.ingest_runs
SET finished_at = :finished_at,
    success = :success,
    posts_fetched = :posts_fetched,
    posts_inserted = :posts_inserted,
    comments_fetched = :comments_fetched,
    comments_inserted = :comments_inserted,
    versions_recorded = :versions_recorded,
    error_class = :error_class,
    error_message = :error_message
WHERE id = :id;

-- name: ingest_runs_recent
-- The latest attempts of one source, newest first. Served by: ingest_runs_source_started_idx.
SELECT * FROM ingestion.ingest_runs
WHERE source_id = :source_id
ORDER BY started_at DESC, id DESC
LIMIT :limit;
