-- name: run_requests_insert
-- Queue a run requested through the API (or `tg-parser` itself). Served by: run_requests primary key.
-- example: run_id=run-20250601-0001 steps='["ingest","process"]' source_id=durov options='{}' requested_by=k_3f9a1c webhook_url=null progress='{}' counts='{}' created_at=2025-06-01T12:00:00Z webhook_status=null
INSERT INTO processing.run_requests (
    run_id, steps, source_id, options, requested_by, webhook_url, status, progress, counts, error,
    created_at, started_at, finished_at, worker_id, lease_expires_at, webhook_status, webhook_attempts,
    webhook_error
) VALUES (
    :run_id, :steps, :source_id, :options, :requested_by, :webhook_url, 'queued', :progress, :counts, NULL,
    :created_at, NULL, NULL, NULL, NULL, :webhook_status, 0, NULL
);

-- name: run_requests_get
-- One queued, running or finished run. Served by: run_requests primary key.
-- example: run_id=run-20250601-0001
SELECT * FROM processing.run_requests WHERE run_id = :run_id;

-- name: run_requests_page
-- Runs newest first, optionally of one status, after the previous page's last (created_at, run_id)
-- (keyset). Served by: run_requests_created_idx (backwards); run_requests_status_idx with a status.
-- example: before_created=9999-12-31 before_id='' status=null limit=100
SELECT * FROM processing.run_requests
WHERE (created_at, run_id) < (:before_created, :before_id)
  AND (CAST(:status AS TEXT) IS NULL OR status = :status)
ORDER BY created_at DESC, run_id DESC
LIMIT :limit;

-- name: run_requests_renew
-- Extend the lease of a run this worker is executing, and record its progress. Returns the row only
-- while this worker still holds it. Served by: run_requests primary key.
-- example: expires_at=2025-06-01T12:05:00Z progress='{}' counts='{}' run_id=run-20250601-0001 worker_id=worker-1
UPDATE processing.run_requests
SET lease_expires_at = :expires_at, progress = :progress, counts = :counts
WHERE run_id = :run_id AND worker_id = :worker_id AND status = 'running'
RETURNING run_id;

-- name: run_requests_finish
-- Close a run this worker executed: its outcome, counts and error. Served by: run_requests primary key.
-- example: status=succeeded finished_at=2025-06-01T12:03:00Z progress='{}' counts='{}' error=null run_id=run-20250601-0001 worker_id=worker-1
UPDATE processing.run_requests
SET status = :status, finished_at = :finished_at, progress = :progress, counts = :counts, error = :error,
    lease_expires_at = NULL
WHERE run_id = :run_id AND worker_id = :worker_id AND status = 'running'
RETURNING run_id;

-- name: run_requests_fail_lapsed
-- Runs whose worker died (its lease lapsed without renewal) are failed, never left running; returns
-- them so their webhooks are sent. Served by: run_requests_status_idx.
-- example: now=2025-06-01T12:00:00Z
UPDATE processing.run_requests
SET status = 'failed', finished_at = :now, lease_expires_at = NULL,
    error = 'the worker executing this run stopped renewing its lease (it died or lost the database)'
WHERE status = 'running' AND lease_expires_at < :now
RETURNING run_id;

-- name: run_requests_webhook_due
-- Finished runs whose webhook is still to be delivered and that no worker is delivering right now.
-- Served by: run_requests_status_idx.
-- example: now=2025-06-01T12:00:00Z limit=100
SELECT * FROM processing.run_requests
WHERE status IN ('succeeded', 'failed') AND webhook_status = 'pending'
  AND (lease_expires_at IS NULL OR lease_expires_at < :now)
ORDER BY created_at, run_id
LIMIT :limit;

-- name: run_requests_webhook_claim
-- Take a finished run's pending webhook for delivery: one statement, so of two workers that find it
-- due only one delivers it. A finished run's lease column is free, so it holds the delivery's lease: a
-- worker that dies mid-delivery leaves it to others once :expires_at passes. Returns the row, or
-- nothing when another worker has it. Served by: run_requests primary key.
-- example: expires_at=2025-06-01T12:05:00Z run_id=run-20250601-0001 now=2025-06-01T12:00:00Z
UPDATE processing.run_requests
SET lease_expires_at = :expires_at
WHERE run_id = :run_id AND status IN ('succeeded', 'failed') AND webhook_status = 'pending'
  AND (lease_expires_at IS NULL OR lease_expires_at < :now)
RETURNING *;

-- name: run_requests_webhook_result
-- Record the outcome of a webhook delivery and its attempts, and release the delivery's lease.
-- Served by: run_requests primary key.
-- example: webhook_status=delivered attempts=1 webhook_error=null run_id=run-20250601-0001
UPDATE processing.run_requests
SET webhook_status = :webhook_status, webhook_attempts = webhook_attempts + :attempts,
    webhook_error = :webhook_error, lease_expires_at = NULL
WHERE run_id = :run_id;

-- name: run_requests_count_by_status
-- How many runs are in each state (the API's metrics). Served by: run_requests_status_idx.
SELECT status, COUNT(*) AS n FROM processing.run_requests GROUP BY status;
