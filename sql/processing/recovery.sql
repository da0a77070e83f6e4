-- name: run_leases_insert
-- A `process` run's heartbeat, taken when the run starts: the run's process renews it while it works,
-- so a lease that lapsed is a run whose process died. Served by: run_leases primary key.
-- example: run_id=run-20250601-0001 worker_id=host-a:4242 expires_at=2025-06-01T12:01:00Z
INSERT INTO processing.run_leases (run_id, worker_id, expires_at) VALUES (:run_id, :worker_id, :expires_at);

-- name: run_leases_renew
-- Extend this worker's heartbeat on its run; no row back when another worker already declared the run
-- abandoned (its lease lapsed: the process was stopped or stalled longer than the lease).
-- Served by: run_leases primary key.
-- example: run_id=run-20250601-0001 worker_id=host-a:4242 expires_at=2025-06-01T12:02:00Z
UPDATE processing.run_leases SET expires_at = :expires_at
WHERE run_id = :run_id AND worker_id = :worker_id
RETURNING run_id;

-- name: run_leases_delete
-- Drop a run's heartbeat when its process records the run's outcome. Served by: run_leases primary key.
-- example: run_id=run-20250601-0001
DELETE FROM processing.run_leases WHERE run_id = :run_id;

-- name: run_leases_take_lapsed
-- Take out the heartbeats that lapsed (their process died) and return them, so the caller marks those
-- runs abandoned in the same transaction. Deleting first makes one worker, not several, record each.
-- Served by: a sequential scan of run_leases (one row per run in progress).
-- example: now=2025-06-01T12:00:00Z
DELETE FROM processing.run_leases WHERE expires_at < :now
RETURNING run_id, worker_id, expires_at;

-- name: runs_abandon
-- Mark a run whose process died as failed, its error starting with 'abandoned:'; its counts stay as
-- its process last wrote them (runs_progress). A run that finished meanwhile is left as it is.
-- Served by: runs primary key.
-- example: run_id=run-20250601-0001 finished_at=2025-06-01T12:05:00Z error='abandoned: its worker host-a:4242 stopped renewing its lease'
UPDATE processing.runs SET status = 'failed', finished_at = :finished_at, error = :error
WHERE run_id = :run_id AND status = 'running';

-- name: runs_progress
-- A running run's counts so far, written with each batch of documents (so a run whose process dies
-- keeps what it wrote). Served by: runs primary key.
-- example: run_id=run-20250601-0001 counts='{"processed":10,"failed":0}'
UPDATE processing.runs SET counts = :counts WHERE run_id = :run_id AND status = 'running';

-- name: llm_pause_publish
-- Record a Retry-After deadline for one endpoint and API key (:key_hash, a sha256: the key itself is
-- never stored); a later deadline already recorded is kept. Served by: llm_pauses primary key.
-- example: key_hash=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 paused_until=2025-06-01T12:00:30Z now=2025-06-01T12:00:00Z
INSERT INTO processing.llm_pauses AS p (key_hash, paused_until, updated_at)
VALUES (:key_hash, :paused_until, :now)
ON CONFLICT (key_hash) DO UPDATE SET paused_until = excluded.paused_until, updated_at = excluded.updated_at
WHERE p.paused_until < excluded.paused_until;

-- name: llm_pause_until
-- Until when requests with this endpoint and API key wait (a deadline in the past means none).
-- Served by: llm_pauses primary key.
-- example: key_hash=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
SELECT paused_until FROM processing.llm_pauses WHERE key_hash = :key_hash;
