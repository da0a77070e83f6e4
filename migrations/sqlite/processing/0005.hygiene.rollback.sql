DROP INDEX runs_started_idx;
DROP TRIGGER runs_check_update;
DROP TRIGGER runs_check_insert;
DROP TRIGGER work_leases_check_update;
DROP TRIGGER work_leases_check_insert;
CREATE INDEX work_leases_expires_idx ON work_leases (expires_at);
DROP TRIGGER processing_failures_check_update;
DROP TRIGGER processing_failures_check_insert;
ALTER TABLE processing_failures DROP COLUMN skipped;

CREATE TABLE processed_documents_old (
    source_ref       TEXT NOT NULL PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    channel_id       INTEGER NOT NULL,
    message_date     TIMESTAMP_TEXT NOT NULL,
    processed_at     TIMESTAMP_TEXT NOT NULL,
    text_clean       TEXT NOT NULL,
    summary          TEXT,
    topics           JSON_TEXT NOT NULL,
    entities         JSON_TEXT NOT NULL,
    language         TEXT,
    model            TEXT NOT NULL,
    prompt_id        TEXT NOT NULL,
    pipeline_version TEXT NOT NULL,
    input_tokens     INTEGER,
    output_tokens    INTEGER,
    metadata         JSON_TEXT NOT NULL
);
INSERT INTO processed_documents_old (
    source_ref, id, channel_id, message_date, processed_at, text_clean, summary, topics, entities, language,
    model, prompt_id, pipeline_version, input_tokens, output_tokens, metadata
)
SELECT source_ref, id, channel_id, message_date, processed_at, text_clean, summary, topics, entities, language,
       model, prompt_id, pipeline_version, input_tokens, output_tokens, metadata
FROM processed_documents;
DROP TABLE processed_documents;
ALTER TABLE processed_documents_old RENAME TO processed_documents;
CREATE INDEX processed_documents_channel_date_idx ON processed_documents (channel_id, message_date, source_ref);
CREATE INDEX processed_documents_channel_processed_idx ON processed_documents (channel_id, processed_at);
