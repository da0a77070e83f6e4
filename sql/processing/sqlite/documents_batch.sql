-- name: processing_upsert_documents
-- Write documents, the one current document of each message (a re-run replaces it), one or a batch in
-- one statement; see the PostgreSQL variant for the shape of `rows` (objects keyed by column name; a
-- key left out is NULL). The only statement that writes processed_documents, so its SET list is the
-- only one (the same as the PostgreSQL variant's: a test holds them to the table's columns).
-- Timestamps arrive as canonical text and are stored as they are; JSON values are stored as their
-- compact text. Served by: processed_documents primary key.
-- example: rows='[{"source_ref":"tg:1500000001:post:1000","id":"doc:tg:1500000001:post:1000","channel_id":1500000001,"message_date":"2025-05-31T09:30:00Z","processed_at":"2025-06-01T12:00:00Z","summary":"A short summary","language":"en"}]'
INSERT INTO processing.processed_documents (
    source_ref, id, channel_id, message_date, processed_at, text_clean, summary, topics, entities, language,
    model, prompt_id, pipeline_version, input_tokens, output_tokens, metadata
)
SELECT r.value ->> 'source_ref',
       r.value ->> 'id',
       r.value ->> 'channel_id',
       r.value ->> 'message_date',
       r.value ->> 'processed_at',
       r.value ->> 'text_clean',
       r.value ->> 'summary',
       r.value -> 'topics',
       r.value -> 'entities',
       r.value ->> 'language',
       r.value ->> 'model',
       r.value ->> 'prompt_id',
       r.value ->> 'pipeline_version',
       r.value ->> 'input_tokens',
       r.value ->> 'output_tokens',
       r.value -> 'metadata'
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
-- example: refs='["tg:1500000001:post:1000","tg:1500000001:post:1001"]'
DELETE FROM processing.processing_failures WHERE source_ref IN (SELECT value FROM json_each(:refs));
