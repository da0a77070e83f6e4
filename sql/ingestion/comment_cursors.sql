-- name: comment_cursor_get
-- The last stored comment id of one thread (discussion-group id space). Served by: comment_cursors primary key.
-- example: source_id=durov thread_id=1200
SELECT * FROM ingestion.comment_cursors WHERE source_id = :source_id AND thread_id = :thread_id;

-- name: comment_cursors_list
-- All thread cursors of a source. Served by: comment_cursors primary key (prefix source_id).
-- example: source_id=durov
SELECT * FROM ingestion.comment_cursors WHERE source_id = :source_id ORDER BY thread_id;

-- name: comment_cursor_advance
-- Create or move a thread cursor forward, never back. Served by: comment_cursors primary key.
-- example: source_id=durov thread_id=1200 last_comment_id=1350 now=2025-06-01T12:00:00Z
INSERT INTO ingestion.comment_cursors AS c (source_id, thread_id, last_comment_id, updated_at)
VALUES (:source_id, :thread_id, :last_comment_id, :now)
ON CONFLICT (source_id, thread_id) DO UPDATE
SET last_comment_id = CASE WHEN excluded.last_comment_id > c.last_comment_id
                           THEN excluded.last_comment_id ELSE c.last_comment_id END,
    updated_at = excluded.updated_at;
