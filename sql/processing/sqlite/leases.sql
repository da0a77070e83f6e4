-- name: processing_claim_leases
-- Claim a batch of messages (a JSON array of source_refs) for one worker until :expires_at. A message
-- under another worker's live lease, or already processed (unless :force), is not claimed; an expired
-- lease is taken over. Returns the refs this worker now holds: only those may be sent to the LLM.
-- The process coordinator passes :force = true and runs processing_unclaim_done right after, which
-- looks the documents up with a later snapshot (one probe per message rather than two).
-- Served by: work_leases primary key, processed_documents primary key.
-- example: worker_id=worker-1 now=2025-06-01T12:00:00Z expires_at=2025-06-01T12:05:00Z refs='["tg:1500000001:post:1000","tg:1500000001:post:1001"]' force=false
INSERT INTO processing.work_leases AS l (source_ref, worker_id, leased_at, expires_at)
SELECT DISTINCT j.value, :worker_id, :now, :expires_at
FROM json_each(:refs) AS j
WHERE :force OR NOT EXISTS (SELECT 1 FROM processing.processed_documents AS d WHERE d.source_ref = j.value)
ORDER BY j.value
ON CONFLICT (source_ref) DO UPDATE SET
    worker_id = excluded.worker_id,
    leased_at = excluded.leased_at,
    expires_at = excluded.expires_at
WHERE l.expires_at < excluded.leased_at OR l.worker_id = excluded.worker_id
RETURNING source_ref;

-- name: processing_release_leases
-- Give back a worker's leases (a JSON array of refs) once their documents or failures are written.
-- Served by: work_leases primary key.
-- example: worker_id=worker-1 refs='["tg:1500000001:post:1000","tg:1500000001:post:1001"]'
DELETE FROM processing.work_leases
WHERE worker_id = :worker_id AND source_ref IN (SELECT value FROM json_each(:refs));
