-- name: run_requests_claim
-- Take the oldest queued run for this worker and lease it. SQLite has one writer at a time (the store
-- runs this inside BEGIN IMMEDIATE), so the sub-select and the update see the same queue and a run is
-- taken once. Served by: run_requests_status_idx.
-- example: worker_id=worker-1 now=2025-06-01T12:00:00Z expires_at=2025-06-01T12:05:00Z
UPDATE processing.run_requests
SET status = 'running', worker_id = :worker_id, started_at = :now, lease_expires_at = :expires_at
WHERE run_id = (
    SELECT run_id FROM processing.run_requests
    WHERE status = 'queued'
    ORDER BY created_at, run_id
    LIMIT 1
)
RETURNING *;
