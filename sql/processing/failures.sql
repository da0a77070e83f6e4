-- name: processing_record_failure
-- Journal a failed message: first failure inserts, later ones count attempts and keep the latest error.
-- Served by: processing_failures primary key.
INSERT INTO processing.processing_failures AS f (
    source_ref, channel_id, error_class, error_message, permanent, attempts, first_failed_at, last_failed_at, run_id
) VALUES (
    :source_ref, :channel_id, :error_class, :error_message, :permanent, 1, :now, :now, :run_id
)
ON CONFLICT (source_ref) DO UPDATE SET
    error_class = excluded.error_class,
    error_message = excluded.error_message,
    permanent = excluded.permanent,
    attempts = f.attempts + 1,
    last_failed_at = excluded.last_failed_at,
    run_id = excluded.run_id;

-- name: processing_delete_failure
-- A message succeeded: its failure row goes. Served by: processing_failures primary key.
DELETE FROM processing.processing_failures WHERE source_ref = :source_ref;

-- name: processing_list_failures
-- The failure journal, newest first. Served by: a sequential scan (the journal stays small).
SELECT * FROM processing.processing_failures ORDER BY last_failed_at DESC, source_ref LIMIT :limit;

-- name: processing_count_failures
-- Failures by permanence, for reports and health. Served by: a sequential scan.
SELECT permanent, COUNT(*) AS n FROM processing.processing_failures GROUP BY permanent ORDER BY permanent;
