-- name: processing_unclaim_done
-- Give back this worker's fresh leases (a JSON array of refs) on messages whose document was written at or
-- after :done_since (the epoch for a normal run, the run's start with --force), returning those refs.
-- The process pipeline runs it right after processing_claim_leases in the same transaction: under READ
-- COMMITTED this statement takes a new snapshot, so it sees a document another worker committed while the
-- claim waited on that worker's lease row, and the message is never sent to the LLM twice.
-- Served by: work_leases primary key, processed_documents primary key.
-- example: worker_id=worker-1 refs='["tg:1500000001:post:1000","tg:1500000001:post:1001"]' done_since=2025-06-01T12:00:00Z
DELETE FROM processing.work_leases AS l
WHERE l.worker_id = :worker_id
  AND l.source_ref IN (SELECT jsonb_array_elements_text(:refs))
  AND EXISTS (
      SELECT 1 FROM processing.processed_documents AS d
      WHERE d.source_ref = l.source_ref AND d.processed_at >= :done_since
  )
RETURNING l.source_ref;
