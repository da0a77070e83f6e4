-- name: raw_insert_messages
-- Store a batch of new messages in one statement; see the PostgreSQL variant for the shape of `rows`
-- (objects keyed by column name; a key left out is NULL). On SQLite the store binds raw_insert_message
-- per row instead (binding in-process is cheaper than SQLite's JSON functions), so this form is the
-- portable counterpart rather than the hot path. Timestamps arrive as canonical text and are stored as
-- they are; JSON values are stored as their compact text. Served by: raw_messages primary key.
-- example: rows='[{"source_ref":"tg:1500000001:post:1000","source_id":"durov","channel_id":1500000001,"message_id":1000,"message_type":"post","date":"2025-05-31T09:30:00Z","text":"New post","views":1500}]'
INSERT INTO raw.raw_messages (
    source_ref, source_id, channel_id, message_id, message_type, date, edit_date, text, thread_id,
    parent_message_id, grouped_id, views, forwards, replies, media_type, media, raw_payload,
    payload_truncated, payload_size, inserted_at
)
SELECT r.value ->> 'source_ref',
       r.value ->> 'source_id',
       r.value ->> 'channel_id',
       r.value ->> 'message_id',
       r.value ->> 'message_type',
       r.value ->> 'date',
       r.value ->> 'edit_date',
       r.value ->> 'text',
       r.value ->> 'thread_id',
       r.value ->> 'parent_message_id',
       r.value ->> 'grouped_id',
       r.value ->> 'views',
       r.value ->> 'forwards',
       r.value ->> 'replies',
       r.value ->> 'media_type',
       NULLIF(r.value -> 'media', 'null'),
       r.value -> 'raw_payload',
       r.value ->> 'payload_truncated',
       r.value ->> 'payload_size',
       r.value ->> 'inserted_at'
FROM json_each(:rows) AS r
WHERE true
ON CONFLICT (source_ref) DO NOTHING;

-- name: raw_insert_message
-- raw_insert_message of sql/raw/messages.sql for SQLite, taking `text`, `media` and `raw_payload` as
-- text or as their UTF-8 bytes: the export import spools them encoded and binds the bytes as they are
-- (no decode in Python, no encode again in the driver); CAST stores them as TEXT, what a str would be
-- (a no-op for a str). The bytes are valid UTF-8, checked when the import read the file.
-- Served by: raw_messages primary key.
-- example: source_ref=tg:1500000001:post:1000 source_id=durov channel_id=1500000001 message_id=1000 message_type=post date=2025-05-31T09:30:00Z edit_date=null text='New post' thread_id=1200 parent_message_id=null grouped_id=null views=1500 forwards=3 replies=12 media_type=null media=null raw_payload='{"_":"Message","id":1000}' payload_truncated=false payload_size=512 inserted_at=2025-06-01T12:00:00Z
INSERT INTO raw.raw_messages (
    source_ref, source_id, channel_id, message_id, message_type, date, edit_date, text, thread_id,
    parent_message_id, grouped_id, views, forwards, replies, media_type, media, raw_payload,
    payload_truncated, payload_size, inserted_at
) VALUES (
    :source_ref, :source_id, :channel_id, :message_id, :message_type, :date, :edit_date,
    CAST(:text AS TEXT), :thread_id, :parent_message_id, :grouped_id, :views, :forwards, :replies,
    :media_type, CAST(:media AS TEXT), CAST(:raw_payload AS TEXT), :payload_truncated, :payload_size,
    :inserted_at
)
ON CONFLICT (source_ref) DO NOTHING;
