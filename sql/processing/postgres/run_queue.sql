-- name: run_requests_claim
-- Take the oldest queued run for this worker and lease it. FOR UPDATE SKIP LOCKED: any number of
-- workers on any number of hosts share the queue, none waits for another, and a run is taken once.
-- Served by: run_requests_status_idx.
-- example: worker_id=worker-1 now=2025-06-01T12:00:00Z expires_at=2025-06-01T12:05:00Z
UPDATE processing.run_requests
SET status = 'running', worker_id = :worker_id, started_at = :now, lease_expires_at = :expires_at
WHERE run_id = (
    SELECT run_id FROM processing.run_requests
    WHERE status = 'queued'
    ORDER BY created_at, run_id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING *;
