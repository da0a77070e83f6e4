-- name: raw_insert_message
-- Store a message as first seen. A source_ref already stored is left as it is: raw is a snapshot, and
-- a differing re-observation goes to raw_message_versions instead. Served by: raw_messages primary key.
INSERT INTO raw.raw_messages (
    source_ref, source_id, channel_id, message_id, message_type, date, edit_date, text, thread_id,
    parent_message_id, grouped_id, views, forwards, replies, media_type, media, raw_payload,
    payload_truncated, payload_size, inserted_at
) VALUES (
    :source_ref, :source_id, :channel_id, :message_id, :message_type, :date, :edit_date, :text, :thread_id,
    :parent_message_id, :grouped_id, :views, :forwards, :replies, :media_type, :media, :raw_payload,
    :payload_truncated, :payload_size, :inserted_at
)
ON CONFLICT (source_ref) DO NOTHING;

-- name: raw_refresh_counters
-- Counters (views, forwards, replies) change all the time and are not part of the snapshot: keep the
-- latest non-NULL values. Served by: raw_messages primary key.
UPDATE raw.raw_messages
SET views = COALESCE(:views, views),
    forwards = COALESCE(:forwards, forwards),
    replies = COALESCE(:replies, replies)
WHERE source_ref = :source_ref;

-- name: raw_insert_version
-- Journal a later observation whose text or edit date differs from the latest known one.
-- Served by: raw_message_versions primary key.
INSERT INTO raw.raw_message_versions (source_ref, observed_at, edit_date, text, raw_payload)
VALUES (:source_ref, :observed_at, :edit_date, :text, :raw_payload);

-- name: raw_get_message
-- One message by its key. Served by: raw_messages primary key.
SELECT * FROM raw.raw_messages WHERE source_ref = :source_ref;

-- name: raw_list_versions
-- The observations journaled for one message, oldest first. Served by: raw_message_versions_ref_idx.
SELECT * FROM raw.raw_message_versions WHERE source_ref = :source_ref ORDER BY id;

-- name: raw_count_messages
-- How many messages (optionally of one channel and type) are stored. Served by: raw_messages_channel_date_idx
-- when a channel is given; a full scan otherwise.
SELECT COUNT(*) AS n FROM raw.raw_messages
WHERE (CAST(:channel_id AS BIGINT) IS NULL OR channel_id = :channel_id)
  AND (CAST(:message_type AS TEXT) IS NULL OR message_type = :message_type);

-- name: raw_stream_channel
-- Every message of one channel in time order, read in keyset batches (Database.keyset_batches), each
-- its own short statement: the next batch starts after the last row's (date, source_ref).
-- Served by: raw_messages_channel_date_idx.
SELECT * FROM raw.raw_messages
WHERE channel_id = :channel_id AND (date, source_ref) > (:after_date, :after_ref)
ORDER BY date, source_ref
LIMIT :batch_size;

-- name: raw_max_message_id
-- The highest stored message id of a source and type (a cursor sanity check).
-- Served by: raw_messages_source_idx.
SELECT MAX(message_id) AS max_id FROM raw.raw_messages
WHERE source_id = :source_id AND message_type = :message_type;

-- name: raw_channels
-- Channels with stored messages and their counts. Served by: raw_messages_channel_date_idx (index-only scan).
SELECT channel_id, COUNT(*) AS messages, MIN(date) AS first_date, MAX(date) AS last_date
FROM raw.raw_messages
GROUP BY channel_id
ORDER BY channel_id;
