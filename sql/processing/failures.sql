-- name: processing_record_failure
-- Journal a failed message: first failure inserts, later ones add their requests to `attempts` (:attempts
-- is the requests this failure cost; a skip sends none and passes 1) and keep the latest error.
-- A skip (:skipped, a message with nothing to process, e.g. media only) is journaled the same way, so
-- later runs pass it by, but it is not a failure: the failure list, counts and /metrics leave it out.
-- Served by: processing_failures primary key.
-- example: source_ref=tg:1500000001:post:1000 channel_id=1500000001 error_class=LlmRefusal error_message='the model refused' permanent=true skipped=false attempts=1 now=2025-06-01T12:00:00Z run_id=run-20250601-0001
INSERT INTO processing.processing_failures AS f (
    source_ref, channel_id, error_class, error_message, permanent, skipped, attempts, first_failed_at,
    last_failed_at, run_id
) VALUES (
    :source_ref, :channel_id, :error_class, :error_message, :permanent, :skipped, :attempts, :now, :now, :run_id
)
ON CONFLICT (source_ref) DO UPDATE SET
    error_class = excluded.error_class,
    error_message = excluded.error_message,
    permanent = excluded.permanent,
    skipped = excluded.skipped,
    attempts = f.attempts + excluded.attempts,
    last_failed_at = excluded.last_failed_at,
    run_id = excluded.run_id;

-- name: processing_delete_failure
-- A message succeeded: its failure row goes. Served by: processing_failures primary key.
-- example: source_ref=tg:1500000001:post:1000
DELETE FROM processing.processing_failures WHERE source_ref = :source_ref;

-- name: processing_list_failures
-- The failure journal (real failures, not skips), newest first. Served by: a sequential scan (the
-- journal of real failures stays small).
-- example: limit=100
SELECT * FROM processing.processing_failures
WHERE NOT skipped
ORDER BY last_failed_at DESC, source_ref
LIMIT :limit;

-- name: processing_count_failures
-- Real failures (not skips) by permanence, for reports and health. Served by: a sequential scan.
SELECT permanent, COUNT(*) AS n FROM processing.processing_failures
WHERE NOT skipped
GROUP BY permanent
ORDER BY permanent;

-- name: processing_count_skipped
-- Messages journaled as skipped (nothing to process: media only). Served by: a sequential scan.
SELECT COUNT(*) AS n FROM processing.processing_failures WHERE skipped;
