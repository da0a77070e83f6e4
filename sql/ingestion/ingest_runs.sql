-- name: ingest_run_start
-- Open the journal row of one ingestion attempt; returns its id. Served by: ingest_runs primary key.
-- example: source_id=durov run_id=run-20250601-0001 started_at=2025-06-01T12:00:00Z
INSERT INTO ingestion.ingest_runs (source_id, run_id, started_at)
VALUES (:source_id, :run_id, :started_at)
RETURNING id;

-- name: ingest_run_finish
-- Close an attempt with its outcome and counts. Served by: ingest_runs primary key.
-- example: finished_at=2025-06-01T12:03:00Z success=true posts_fetched=100 posts_inserted=90 comments_fetched=50 comments_inserted=45 versions_recorded=2 error_class=null error_message=null id=1
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
-- example: source_id=durov limit=20
SELECT * FROM ingestion.ingest_runs
WHERE source_id = :source_id
ORDER BY started_at DESC, id DESC
LIMIT :limit;
