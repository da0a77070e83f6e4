-- name: raw_insert_messages
-- Store a batch of new messages in one statement (the bulk form of raw_insert_message, used on
-- PostgreSQL, where one statement per batch costs far less than one per row). `rows` is a JSON array
-- of objects keyed by column name (RawStore.batch_json): timestamps as canonical UTC text, media and
-- raw_payload as JSON values. Values are taken by name, never by position; a key left out is NULL, as
-- a JSON null is (the store leaves out NULL values, which keeps the batch small). A source_ref already
-- stored is left as it is (the snapshot rule). Served by: raw_messages primary key.
-- example: rows='[{"source_ref":"tg:1500000001:post:1000","source_id":"durov","channel_id":1500000001,"message_id":1000,"message_type":"post","date":"2025-05-31T09:30:00Z","text":"New post","views":1500}]'
INSERT INTO raw.raw_messages (
    source_ref, source_id, channel_id, message_id, message_type, date, edit_date, text, thread_id,
    parent_message_id, grouped_id, views, forwards, replies, media_type, media, raw_payload,
    payload_truncated, payload_size, inserted_at
)
SELECT r.source_ref, r.source_id, r.channel_id, r.message_id, r.message_type, r.date, r.edit_date, r.text,
       r.thread_id, r.parent_message_id, r.grouped_id, r.views, r.forwards, r.replies, r.media_type, r.media,
       r.raw_payload, r.payload_truncated, r.payload_size, r.inserted_at
FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r (
    source_ref text, source_id text, channel_id bigint, message_id bigint, message_type text,
    date timestamptz, edit_date timestamptz, text text, thread_id bigint, parent_message_id bigint,
    grouped_id bigint, views bigint, forwards bigint, replies bigint, media_type text, media jsonb,
    raw_payload jsonb, payload_truncated boolean, payload_size integer, inserted_at timestamptz
)
ON CONFLICT (source_ref) DO NOTHING;
