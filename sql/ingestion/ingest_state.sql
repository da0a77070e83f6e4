-- name: comment_thread_mark_unavailable
-- Remember that a post's comment thread cannot be read (MSG_ID_INVALID: no discussion thread), so later
-- runs skip it instead of retrying forever. Marking twice keeps the first mark.
-- Served by: comment_threads_unavailable primary key.
-- example: source_id=durov thread_id=1200 reason=private now=2025-06-01T12:00:00Z
INSERT INTO ingestion.comment_threads_unavailable (source_id, thread_id, reason, marked_at)
VALUES (:source_id, :thread_id, :reason, :now)
ON CONFLICT (source_id, thread_id) DO NOTHING;

-- name: comment_threads_unavailable_list
-- The post ids of one source whose comment threads are marked unreadable.
-- Served by: comment_threads_unavailable primary key (prefix source_id).
-- example: source_id=durov
SELECT thread_id, reason, marked_at FROM ingestion.comment_threads_unavailable
WHERE source_id = :source_id
ORDER BY thread_id;

-- name: sources_record_rate_limit
-- Telegram asked for a wait longer than tg-parser sleeps inline: skip the source until `:until` and say
-- why. This is not a failure (fail_count and status are unchanged). Served by: sources primary key.
-- example: until=2025-06-01T12:30:00Z error='A wait of 30 seconds is required' now=2025-06-01T12:00:00Z source_id=durov
UPDATE ingestion.sources
SET rate_limit_until = :until,
    last_error = :error,
    updated_at = :now
WHERE source_id = :source_id;
