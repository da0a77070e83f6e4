-- name: processing_upsert_documents
-- Write documents, the one current document of each message (a re-run replaces it): the only statement
-- that writes processed_documents, for one document or a batch (one statement per batch: a statement per
-- row costs the server and the client far more than parsing one JSON array), so its SET list is the
-- only one. `rows` is a JSON array of objects keyed by column name (ProcessingStore.documents_json):
-- timestamps as ISO 8601 text with an offset (as orjson writes them; canonical UTC text reads the same),
-- topics/entities/metadata as JSON values. Values are taken by name,
-- never by position; a key left out is NULL, as a JSON null is. A batch holds each source_ref once (ON
-- CONFLICT cannot update a row twice in one statement). Served by: processed_documents primary key.
-- example: rows='[{"source_ref":"tg:1500000001:post:1000","id":"doc:tg:1500000001:post:1000","channel_id":1500000001,"message_date":"2025-05-31T09:30:00Z","processed_at":"2025-06-01T12:00:00Z","summary":"A short summary","language":"en"}]'
INSERT INTO processing.processed_documents (
    source_ref, id, channel_id, message_date, processed_at, text_clean, summary, topics, entities, language,
    model, prompt_id, pipeline_version, input_tokens, output_tokens, metadata
)
SELECT r.source_ref, r.id, r.channel_id, r.message_date, r.processed_at, r.text_clean, r.summary, r.topics,
       r.entities, r.language, r.model, r.prompt_id, r.pipeline_version, r.input_tokens, r.output_tokens,
       r.metadata
FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r (
    source_ref text, id text, channel_id bigint, message_date timestamptz, processed_at timestamptz,
    text_clean text, summary text, topics jsonb, entities jsonb, language text, model text, prompt_id text,
    pipeline_version text, input_tokens integer, output_tokens integer, metadata jsonb
)
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
DELETE FROM processing.processing_failures WHERE source_ref IN (SELECT jsonb_array_elements_text(:refs));
