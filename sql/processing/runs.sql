-- name: runs_insert
-- Open a run report (process, topicize, export, run). Served by: runs primary key.
-- example: run_id=run-20250601-0001 kind=process started_at=2025-06-01T12:00:00Z finished_at=null status=running params='{}' counts='{}' error=null
INSERT INTO processing.runs (run_id, kind, started_at, finished_at, status, params, counts, error)
VALUES (:run_id, :kind, :started_at, :finished_at, :status, :params, :counts, :error);

-- name: runs_finish
-- Close a run report with its outcome and counts. Served by: runs primary key.
-- example: finished_at=2025-06-01T12:03:00Z status=ok counts='{}' error=null run_id=run-20250601-0001
UPDATE processing.runs
SET finished_at = :finished_at, status = :status, counts = :counts, error = :error
WHERE run_id = :run_id;

-- name: runs_get
-- One run report. Served by: runs primary key.
-- example: run_id=run-20250601-0001
SELECT * FROM processing.runs WHERE run_id = :run_id;

-- name: runs_recent
-- The latest reports of one kind (or all when :kind is NULL), optionally of one status, newest first
-- (`runs list`, the last automatic prune). Served by: runs_kind_started_idx with a kind; without one, a
-- scan of runs, which `db prune` keeps to PRUNE_RUNS_DAYS of reports.
-- example: kind=process status=null limit=20
SELECT * FROM processing.runs
WHERE (CAST(:kind AS TEXT) IS NULL OR kind = :kind)
  AND (CAST(:status AS TEXT) IS NULL OR status = :status)
ORDER BY started_at DESC, run_id DESC
LIMIT :limit;
