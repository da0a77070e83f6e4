-- name: discussion_cursor_get
-- Where a source's discussion-group stream stands, and which group it reads. Served by:
-- discussion_cursors primary key.
-- example: source_id=durov
SELECT * FROM ingestion.discussion_cursors WHERE source_id = :source_id;

-- name: discussion_cursors_list
-- Every source's stream (for `sources list`). Served by: a sequential scan (one row per source).
SELECT * FROM ingestion.discussion_cursors ORDER BY source_id;

-- name: discussion_cursor_open
-- Point a source's stream at group `:chat_id`. With `:restart` (no stream yet, or another group: another
-- id space) the stream starts after `:last_message_id`, the group's newest message, and that is its
-- floor; otherwise the stored cursor and floor are kept (a row seeded by the migration learns its group
-- here). Served by: discussion_cursors primary key.
-- example: source_id=durov chat_id=1700000001 access_hash=5843192847561234 last_message_id=52000 restart=false now=2025-06-01T12:00:00Z
INSERT INTO ingestion.discussion_cursors AS d (
    source_id, chat_id, access_hash, last_message_id, floor_id, history_error, checked_at, updated_at
) VALUES (:source_id, :chat_id, :access_hash, :last_message_id, :last_message_id, NULL, :now, :now)
ON CONFLICT (source_id) DO UPDATE
SET last_message_id = CASE WHEN :restart THEN excluded.last_message_id ELSE d.last_message_id END,
    floor_id = CASE WHEN :restart THEN excluded.floor_id ELSE d.floor_id END,
    chat_id = excluded.chat_id,
    access_hash = excluded.access_hash,
    history_error = NULL,
    checked_at = excluded.checked_at,
    updated_at = excluded.updated_at;

-- name: discussion_cursor_advance
-- Move the stream cursor forward, never back. Call only after the comments it covers are committed.
-- Served by: discussion_cursors primary key.
-- example: source_id=durov last_message_id=52100 now=2025-06-01T12:00:00Z
UPDATE ingestion.discussion_cursors
SET last_message_id = CASE WHEN :last_message_id > last_message_id THEN :last_message_id
                           ELSE last_message_id END,
    updated_at = :now
WHERE source_id = :source_id;

-- name: discussion_history_unreadable
-- The group's history cannot be read (`:error`; e.g. a private group this account has not joined):
-- comments are read thread by thread until `checked_at` is old enough to try again. Creates the row
-- when the stream never started. Served by: discussion_cursors primary key.
-- example: source_id=durov chat_id=1700000001 access_hash=5843192847561234 error=ChannelPrivateError now=2025-06-01T12:00:00Z
INSERT INTO ingestion.discussion_cursors AS d (
    source_id, chat_id, access_hash, history_error, checked_at, updated_at
) VALUES (:source_id, :chat_id, :access_hash, :error, :now, :now)
ON CONFLICT (source_id) DO UPDATE
SET history_error = excluded.history_error,
    checked_at = excluded.checked_at,
    updated_at = excluded.updated_at;

-- name: discussion_thread_put
-- Remember which channel post a thread root in the group stands for (post_id NULL: not a channel post).
-- The first answer stays. Served by: discussion_threads primary key.
-- example: source_id=durov root_id=51000 post_id=1200 post_date=2025-05-31T09:30:00Z
INSERT INTO ingestion.discussion_threads (source_id, root_id, post_id, post_date)
VALUES (:source_id, :root_id, :post_id, :post_date)
ON CONFLICT (source_id, root_id) DO NOTHING;
