-- name: raw_insert_messages
-- Store a batch of new messages in one statement; see the PostgreSQL variant for the shape of `rows`.
-- On SQLite the store binds raw_insert_message per row instead (binding in-process is cheaper than
-- SQLite's JSON functions), so this form is the portable counterpart rather than the hot path.
-- Timestamps arrive as canonical text and are stored as they are; JSON values are stored as their
-- compact text. Served by: raw_messages primary key.
INSERT INTO raw.raw_messages (
    source_ref, source_id, channel_id, message_id, message_type, date, edit_date, text, thread_id,
    parent_message_id, grouped_id, views, forwards, replies, media_type, media, raw_payload,
    payload_truncated, payload_size, inserted_at
)
SELECT r.value ->> 0,
       r.value ->> 1,
       r.value ->> 2,
       r.value ->> 3,
       r.value ->> 4,
       r.value ->> 5,
       r.value ->> 6,
       r.value ->> 7,
       r.value ->> 8,
       r.value ->> 9,
       r.value ->> 10,
       r.value ->> 11,
       r.value ->> 12,
       r.value ->> 13,
       r.value ->> 14,
       NULLIF(r.value -> 15, 'null'),
       r.value -> 16,
       r.value ->> 17,
       r.value ->> 18,
       r.value ->> 19
FROM json_each(:rows) AS r
WHERE true
ON CONFLICT (source_ref) DO NOTHING;
