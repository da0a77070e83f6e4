-- name: sources_insert
-- Add a source. An existing source_id is left untouched (cursors, counters and status survive a re-add).
-- Returns the source_id only when a row was inserted. Served by: sources primary key.
-- example: source_id=durov channel_id=1500000001 username=durov title="Durov's Channel" kind=telegram status=active include_comments=true since_date=null until_date=null last_post_id=1000 access_hash=5781963213549302512 fail_count=0 comments_unavailable=false created_at=2025-06-01T12:00:00Z updated_at=2025-06-01T12:00:00Z
INSERT INTO ingestion.sources (
    source_id, channel_id, username, title, kind, status, include_comments, since_date, until_date,
    last_post_id, access_hash, fail_count, comments_unavailable, created_at, updated_at
) VALUES (
    :source_id, :channel_id, :username, :title, :kind, :status, :include_comments, :since_date, :until_date,
    :last_post_id, :access_hash, :fail_count, :comments_unavailable, :created_at, :updated_at
)
ON CONFLICT (source_id) DO NOTHING
RETURNING source_id;

-- name: sources_update_identity
-- Refresh what Telegram says about a channel (id, username, title, access hash) without touching its
-- cursor, counters or status. NULL arguments keep the stored value. Served by: sources primary key.
-- example: channel_id=1500000001 username=durov title="Durov's Channel" access_hash=5781963213549302512 now=2025-06-01T12:00:00Z source_id=durov
UPDATE ingestion.sources
SET channel_id = COALESCE(:channel_id, channel_id),
    username = COALESCE(:username, username),
    title = COALESCE(:title, title),
    access_hash = COALESCE(:access_hash, access_hash),
    updated_at = :now
WHERE source_id = :source_id;

-- name: sources_update_options
-- Change the comments flag and the backfill window of a source. Served by: sources primary key.
-- example: include_comments=true since_date=null until_date=null now=2025-06-01T12:00:00Z source_id=durov
UPDATE ingestion.sources
SET include_comments = :include_comments,
    since_date = :since_date,
    until_date = :until_date,
    updated_at = :now
WHERE source_id = :source_id;

-- name: sources_get
-- One source by id. Served by: sources primary key.
-- example: source_id=durov
SELECT * FROM ingestion.sources WHERE source_id = :source_id;

-- name: sources_get_by_channel
-- Sources of one channel (a channel may be both a live source and an imported export).
-- Served by: sources_channel_id_idx.
-- example: channel_id=1500000001
SELECT * FROM ingestion.sources WHERE channel_id = :channel_id ORDER BY source_id;

-- name: sources_list
-- Every source, in id order. Served by: a sequential scan (the table holds one row per channel).
SELECT * FROM ingestion.sources ORDER BY source_id;

-- name: sources_list_by_status
-- Sources in one status (e.g. the active ones an `ingest --all` run visits). Served by: sources_status_idx.
-- example: status=active
SELECT * FROM ingestion.sources WHERE status = :status ORDER BY source_id;

-- name: sources_set_status
-- Pause, resume or flag a source. Returns the number of rows changed (0 = no such source).
-- Served by: sources primary key.
-- example: status=active now=2025-06-01T12:00:00Z source_id=durov
UPDATE ingestion.sources SET status = :status, updated_at = :now WHERE source_id = :source_id;

-- name: sources_delete
-- Remove a source and (by cascade) its comment cursors; raw messages are kept. Served by: sources primary key.
-- example: source_id=durov
DELETE FROM ingestion.sources WHERE source_id = :source_id;

-- name: sources_record_attempt
-- Stamp the start of an ingestion attempt. Served by: sources primary key.
-- example: now=2025-06-01T12:00:00Z source_id=durov
UPDATE ingestion.sources SET last_attempt_at = :now, updated_at = :now WHERE source_id = :source_id;

-- name: sources_record_success
-- A successful attempt: clear the failure counter and error, leave `error` status for `active`
-- (a paused source stays paused). Served by: sources primary key.
-- example: now=2025-06-01T12:00:00Z source_id=durov
UPDATE ingestion.sources
SET last_success_at = :now,
    fail_count = 0,
    last_error = NULL,
    rate_limit_until = NULL,
    status = CASE WHEN status = 'error' THEN 'active' ELSE status END,
    updated_at = :now
WHERE source_id = :source_id;

-- name: sources_record_failure
-- A failed attempt: count it and keep the error; `:permanent` moves the source to `error` status.
-- Served by: sources primary key.
-- example: error='ChannelPrivateError: the channel is private' permanent=false now=2025-06-01T12:00:00Z source_id=durov
UPDATE ingestion.sources
SET fail_count = fail_count + 1,
    last_error = :error,
    status = CASE WHEN :permanent THEN 'error' ELSE status END,
    updated_at = :now
WHERE source_id = :source_id;

-- name: sources_set_rate_limit
-- Telegram asked for a long wait: skip this source until `:until`. Served by: sources primary key.
-- example: until=2025-06-01T12:30:00Z now=2025-06-01T12:00:00Z source_id=durov
UPDATE ingestion.sources SET rate_limit_until = :until, updated_at = :now WHERE source_id = :source_id;

-- name: sources_advance_cursor
-- Move the post cursor forward, never back (a stale writer cannot rewind it). Call only after the rows
-- it covers are committed. Served by: sources primary key.
-- example: last_post_id=1000 now=2025-06-01T12:00:00Z source_id=durov
UPDATE ingestion.sources
SET last_post_id = CASE WHEN :last_post_id > last_post_id THEN :last_post_id ELSE last_post_id END,
    updated_at = :now
WHERE source_id = :source_id;

-- name: sources_set_comments_unavailable
-- Mark that the channel has no discussion group (or it is unreachable), so comments are not tried again.
-- Served by: sources primary key.
-- example: value=true now=2025-06-01T12:00:00Z source_id=durov
UPDATE ingestion.sources SET comments_unavailable = :value, updated_at = :now WHERE source_id = :source_id;
