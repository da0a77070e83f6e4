-- depends: 0004.document_channels
-- compatibility: breaking (media-only messages are journaled as skips, which older code writes as failures)
-- processing store hygiene (issue 17); see the PostgreSQL migration for the reasons.
-- 1. processed_documents.id's UNIQUE gives way to CHECK (id = 'doc:' || source_ref). SQLite drops a
--    table constraint only by rebuilding the table: the rows are copied once into the new definition.
-- 2. work_leases_expires_idx dropped.
-- 3. processing_failures.skipped: media-only messages (no_text) are skips, not failures.
-- 4. runs_started_idx on runs.started_at for `db prune` (a B-tree: SQLite has no BRIN).
-- 5. The other CHECKs (runs status/kind, lease expiry, attempts) as triggers that reject a bad row on
--    INSERT or UPDATE with the constraint's name, as the CHECK does on PostgreSQL: adding a CHECK to
--    these tables would mean rebuilding each. COLLATE "C" is PostgreSQL's: SQLite compares by bytes.

CREATE TABLE processed_documents_new (
    source_ref       TEXT NOT NULL PRIMARY KEY,
    id               TEXT NOT NULL CONSTRAINT processed_documents_id_check CHECK (id = 'doc:' || source_ref),
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
INSERT INTO processed_documents_new (
    source_ref, id, channel_id, message_date, processed_at, text_clean, summary, topics, entities, language,
    model, prompt_id, pipeline_version, input_tokens, output_tokens, metadata
)
SELECT source_ref, id, channel_id, message_date, processed_at, text_clean, summary, topics, entities, language,
       model, prompt_id, pipeline_version, input_tokens, output_tokens, metadata
FROM processed_documents;
DROP TABLE processed_documents;
ALTER TABLE processed_documents_new RENAME TO processed_documents;
CREATE INDEX processed_documents_channel_date_idx ON processed_documents (channel_id, message_date, source_ref);
CREATE INDEX processed_documents_channel_processed_idx ON processed_documents (channel_id, processed_at);

ALTER TABLE processing_failures ADD COLUMN skipped BOOLEAN_INT NOT NULL DEFAULT 0;
UPDATE processing_failures SET skipped = 1 WHERE error_class = 'no_text';

CREATE TRIGGER processing_failures_check_insert BEFORE INSERT ON processing_failures
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: processing_failures_attempts_check (attempts > 0)')
    WHERE NOT (NEW.attempts > 0);
END;

CREATE TRIGGER processing_failures_check_update BEFORE UPDATE OF attempts ON processing_failures
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: processing_failures_attempts_check (attempts > 0)')
    WHERE NOT (NEW.attempts > 0);
END;

DROP INDEX work_leases_expires_idx;

CREATE TRIGGER work_leases_check_insert BEFORE INSERT ON work_leases
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: work_leases_expiry_check (expires_at > leased_at)')
    WHERE NOT (NEW.expires_at > NEW.leased_at);
END;

CREATE TRIGGER work_leases_check_update BEFORE UPDATE OF leased_at, expires_at ON work_leases
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: work_leases_expiry_check (expires_at > leased_at)')
    WHERE NOT (NEW.expires_at > NEW.leased_at);
END;

CREATE TRIGGER runs_check_insert BEFORE INSERT ON runs
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: runs_status_check (status in running, ok, partial, failed, interrupted)')
    WHERE NOT (NEW.status IN ('running', 'ok', 'partial', 'failed', 'interrupted'));
    SELECT RAISE(ABORT, 'CHECK constraint failed: runs_kind_check (kind in process, topicize, export, run, ingest, prune)')
    WHERE NOT (NEW.kind IN ('process', 'topicize', 'export', 'run', 'ingest', 'prune'));
END;

CREATE TRIGGER runs_check_update BEFORE UPDATE OF status, kind ON runs
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: runs_status_check (status in running, ok, partial, failed, interrupted)')
    WHERE NOT (NEW.status IN ('running', 'ok', 'partial', 'failed', 'interrupted'));
    SELECT RAISE(ABORT, 'CHECK constraint failed: runs_kind_check (kind in process, topicize, export, run, ingest, prune)')
    WHERE NOT (NEW.kind IN ('process', 'topicize', 'export', 'run', 'ingest', 'prune'));
END;

CREATE INDEX runs_started_idx ON runs (started_at);
