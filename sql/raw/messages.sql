-- name: raw_insert_message
-- Store a message as first seen. A source_ref already stored is left as it is: raw is a snapshot, and
-- a differing re-observation goes to raw_message_versions instead. Served by: raw_messages primary key.
-- example: source_ref=tg:1500000001:post:1000 source_id=durov channel_id=1500000001 message_id=1000 message_type=post date=2025-05-31T09:30:00Z edit_date=null text='New post' thread_id=1200 parent_message_id=null grouped_id=null views=1500 forwards=3 replies=12 media_type=null media=null raw_payload='{"_":"Message","id":1000}' payload_truncated=false payload_size=512 inserted_at=2025-06-01T12:00:00Z
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
-- latest non-NULL values in the narrow raw_message_counters row (never the wide raw_messages row). The
-- store passes the values merged with what it read (raw_latest_observations); a NULL keeps the stored
-- value. The update changes no indexed column, so it is HOT (the table's fillfactor leaves room).
-- Served by: raw_message_counters primary key.
-- example: source_ref=tg:1500000001:post:1000 views=1500 forwards=3 replies=12 observed_at=2025-06-01T12:00:00Z
INSERT INTO raw.raw_message_counters AS c (source_ref, views, forwards, replies, observed_at)
VALUES (:source_ref, :views, :forwards, :replies, :observed_at)
ON CONFLICT (source_ref) DO UPDATE SET
    views = COALESCE(excluded.views, c.views),
    forwards = COALESCE(excluded.forwards, c.forwards),
    replies = COALESCE(excluded.replies, c.replies),
    observed_at = excluded.observed_at;

-- name: raw_insert_version
-- Journal a later observation whose text or edit date differs from the latest known one.
-- Served by: raw_message_versions primary key.
-- example: source_ref=tg:1500000001:post:1000 observed_at=2025-06-01T12:00:00Z edit_date=null text='New post' raw_payload='{"_":"Message","id":1000}'
INSERT INTO raw.raw_message_versions (source_ref, observed_at, edit_date, text, raw_payload)
VALUES (:source_ref, :observed_at, :edit_date, :text, :raw_payload);

-- name: raw_get_message
-- One message by its key, with its latest counters (the last refresh, else the snapshot's).
-- Served by: raw_messages and raw_message_counters primary keys.
-- example: source_ref=tg:1500000001:post:1000
SELECT m.source_ref, m.source_id, m.channel_id, m.message_id, m.message_type, m.date, m.edit_date, m.text,
       m.thread_id, m.parent_message_id, m.grouped_id, COALESCE(c.views, m.views) AS views,
       COALESCE(c.forwards, m.forwards) AS forwards, COALESCE(c.replies, m.replies) AS replies,
       m.media_type, m.media, m.raw_payload, m.payload_truncated, m.payload_size, m.inserted_at
FROM raw.raw_messages AS m
LEFT JOIN raw.raw_message_counters AS c ON c.source_ref = m.source_ref
WHERE m.source_ref = :source_ref;

-- name: raw_list_versions
-- The observations journaled for one message, oldest first. Served by: raw_message_versions_ref_idx.
-- example: source_ref=tg:1500000001:post:1000
SELECT * FROM raw.raw_message_versions WHERE source_ref = :source_ref ORDER BY id;

-- name: raw_posts_with_replies
-- One channel's stored posts that announce comments (a reply count above zero, the latest counters
-- first), with when their counters last changed: after an interrupted ingestion attempt, the threads it
-- may have left unread are among them. Unordered (the caller sorts the few it keeps).
-- Served by: raw_messages_channel_date_idx (channel_id prefix), raw_message_counters primary key.
-- example: channel_id=1500000002
-- plan: seqscan-ok it reads every post of one channel, and only in the run after an interrupted attempt (the ingestion runner's catch-up of unread threads): for a channel holding a large share of the messages a scan is the cheaper plan
SELECT m.message_id, m.date, c.observed_at AS counters_changed_at
FROM raw.raw_messages AS m
LEFT JOIN raw.raw_message_counters AS c ON c.source_ref = m.source_ref
WHERE m.channel_id = :channel_id AND m.message_type = 'post' AND COALESCE(c.replies, m.replies) > 0;

-- name: raw_count_messages
-- How many messages (optionally of one channel and type) are stored. Served by: raw_messages_channel_date_idx
-- when a channel is given; a full scan otherwise.
-- The channel is a range (the whole bigint range when none is given), not `(:channel_id IS NULL OR
-- channel_id = :channel_id)`: SQLite cannot search an index through that OR and read every message
-- (caught by the query-plan gate).
-- example: channel_id=1500000001 message_type=null
SELECT COUNT(*) AS n FROM raw.raw_messages
WHERE channel_id BETWEEN COALESCE(CAST(:channel_id AS BIGINT), -9223372036854775808)
                     AND COALESCE(CAST(:channel_id AS BIGINT), 9223372036854775807)
  AND (CAST(:message_type AS TEXT) IS NULL OR message_type = :message_type);

-- name: raw_stream_channel
-- Every message of one channel in time order, with its latest counters, read in keyset batches
-- (Database.keyset_batches), each its own short statement: the next batch starts after the last row's
-- (date, source_ref).
-- Served by: raw_messages_channel_date_idx, raw_message_counters primary key.
-- example: channel_id=1500000001 after_date=0001-01-01 after_ref='' batch_size=2000
SELECT m.source_ref, m.source_id, m.channel_id, m.message_id, m.message_type, m.date, m.edit_date, m.text,
       m.thread_id, m.parent_message_id, m.grouped_id, COALESCE(c.views, m.views) AS views,
       COALESCE(c.forwards, m.forwards) AS forwards, COALESCE(c.replies, m.replies) AS replies,
       m.media_type, m.media, m.raw_payload, m.payload_truncated, m.payload_size, m.inserted_at
FROM raw.raw_messages AS m
LEFT JOIN raw.raw_message_counters AS c ON c.source_ref = m.source_ref
WHERE m.channel_id = :channel_id AND (m.date, m.source_ref) > (:after_date, :after_ref)
ORDER BY m.date, m.source_ref
LIMIT :batch_size;

-- name: raw_channels
-- Channels with stored messages and their counts. Served by: raw_messages_channel_date_idx (index-only scan).
-- plan: seqscan-ok one row per channel with its message count and date range (RawStore.channels): every message is counted
SELECT channel_id, COUNT(*) AS messages, MIN(date) AS first_date, MAX(date) AS last_date
FROM raw.raw_messages
GROUP BY channel_id
ORDER BY channel_id;
