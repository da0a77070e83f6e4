-- name: raw_insert_messages
-- Store a batch of new messages in one statement (the bulk form of raw_insert_message, used on
-- PostgreSQL, where one statement per batch costs far less than one per row). `rows` is a JSON array
-- of rows, each an array in the column order below: timestamps as canonical UTC text, media and
-- raw_payload as JSON values (media null for none). A source_ref already stored is left as it is (the
-- snapshot rule). Served by: raw_messages primary key.
INSERT INTO raw.raw_messages (
    source_ref, source_id, channel_id, message_id, message_type, date, edit_date, text, thread_id,
    parent_message_id, grouped_id, views, forwards, replies, media_type, media, raw_payload,
    payload_truncated, payload_size, inserted_at
)
SELECT r ->> 0,
       r ->> 1,
       CAST(r ->> 2 AS bigint),
       CAST(r ->> 3 AS bigint),
       r ->> 4,
       CAST(r ->> 5 AS timestamptz),
       CAST(r ->> 6 AS timestamptz),
       r ->> 7,
       CAST(r ->> 8 AS bigint),
       CAST(r ->> 9 AS bigint),
       CAST(r ->> 10 AS bigint),
       CAST(r ->> 11 AS bigint),
       CAST(r ->> 12 AS bigint),
       CAST(r ->> 13 AS bigint),
       r ->> 14,
       NULLIF(r -> 15, 'null'::jsonb),
       r -> 16,
       CAST(r ->> 17 AS boolean),
       CAST(r ->> 18 AS integer),
       CAST(r ->> 19 AS timestamptz)
FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS r
ON CONFLICT (source_ref) DO NOTHING;
