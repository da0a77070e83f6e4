-- name: processing_upsert_documents
-- Write a batch of documents in one statement (the bulk form of processing_upsert_document, used on
-- PostgreSQL, where a statement per row costs the server and the client far more than parsing one JSON
-- array). `rows` is a JSON array of rows, each an array in the column order below: timestamps as
-- canonical UTC text, topics/entities/metadata as JSON values. A batch holds each source_ref once (ON
-- CONFLICT cannot update a row twice in one statement). Served by: processed_documents primary key.
INSERT INTO processing.processed_documents (
    source_ref, id, channel_id, message_date, processed_at, text_clean, summary, topics, entities, language,
    model, prompt_id, pipeline_version, input_tokens, output_tokens, metadata
)
SELECT r ->> 0,
       r ->> 1,
       CAST(r ->> 2 AS bigint),
       CAST(r ->> 3 AS timestamptz),
       CAST(r ->> 4 AS timestamptz),
       r ->> 5,
       r ->> 6,
       r -> 7,
       r -> 8,
       r ->> 9,
       r ->> 10,
       r ->> 11,
       r ->> 12,
       CAST(r ->> 13 AS integer),
       CAST(r ->> 14 AS integer),
       r -> 15
FROM jsonb_array_elements(CAST(:rows AS jsonb)) AS r
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
DELETE FROM processing.processing_failures WHERE source_ref IN (SELECT jsonb_array_elements_text(:refs));
