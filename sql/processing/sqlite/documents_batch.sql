-- name: processing_upsert_documents
-- Write a batch of documents in one statement; see the PostgreSQL variant for the shape of `rows`.
-- On SQLite the store binds processing_upsert_document per row instead (binding in-process is cheaper
-- than SQLite's JSON functions), so this form is the portable counterpart rather than the hot path.
-- Timestamps arrive as canonical text and are stored as they are; JSON values are stored as their
-- compact text. Served by: processed_documents primary key.
INSERT INTO processing.processed_documents (
    source_ref, id, channel_id, message_date, processed_at, text_clean, summary, topics, entities, language,
    model, prompt_id, pipeline_version, input_tokens, output_tokens, metadata
)
SELECT r.value ->> 0,
       r.value ->> 1,
       r.value ->> 2,
       r.value ->> 3,
       r.value ->> 4,
       r.value ->> 5,
       r.value ->> 6,
       r.value -> 7,
       r.value -> 8,
       r.value ->> 9,
       r.value ->> 10,
       r.value ->> 11,
       r.value ->> 12,
       r.value ->> 13,
       r.value ->> 14,
       r.value -> 15
FROM json_each(:rows) AS r
WHERE true
ON CONFLICT (source_ref) DO UPDATE SET
    id = excluded.id,
    channel_id = excluded.channel_id,
    message_date = excluded.message_date,
    processed_at = excluded.processed_at,
    text_clean = excluded.text_clean,
    summary = excluded.summary,
    topics = excluded.topics,
    entities = excluded.entities,
    language = excluded.language,
    model = excluded.model,
    prompt_id = excluded.prompt_id,
    pipeline_version = excluded.pipeline_version,
    input_tokens = excluded.input_tokens,
    output_tokens = excluded.output_tokens,
    metadata = excluded.metadata;

-- name: processing_delete_failures
-- Messages that succeeded (a JSON array of refs): their failure rows go, in one statement per batch.
-- Served by: processing_failures primary key.
DELETE FROM processing.processing_failures WHERE source_ref IN (SELECT value FROM json_each(:refs));
