-- depends: 0004.document_channels
-- compatibility: breaking (media-only messages are journaled as skips, which older code writes as failures)
-- processing store hygiene (issue 17):
-- 1. processed_documents.id is always 'doc:' || source_ref: its UNIQUE index (bigger than the primary
--    key, written on every upsert) gives way to a CHECK saying so, which the primary key makes unique.
-- 2. work_leases_expires_idx served only diagnostics and /metrics over a table that holds the leases in
--    flight (a few hundred rows), and made every lease renewal a non-HOT update: dropped.
-- 3. Skips apart from failures: processing_failures.skipped marks a message with nothing to process (a
--    media-only message, journaled as no_text so later runs pass it by); failure counts, the failure
--    list and /metrics count real failures only. Existing no_text rows become skips.
-- 4. runs: CHECKs on status and kind; runs_started_idx, a BRIN index on started_at for `db prune`
--    (reports are appended in started_at order, so block ranges follow time: a few pages, nothing
--    written per row, unlike a B-tree).
-- 5. Text keys compare with COLLATE "C"; CHECKs: a lease expires after it was taken, a failure counts
--    at least one attempt. Added NOT VALID, then VALIDATE (see raw 0003 on why both are here).

ALTER TABLE processed_documents DROP CONSTRAINT processed_documents_id_key;
ALTER TABLE processed_documents
    ALTER COLUMN source_ref TYPE text COLLATE "C",
    ALTER COLUMN id TYPE text COLLATE "C",
    ADD CONSTRAINT processed_documents_id_check CHECK (id = 'doc:' || source_ref) NOT VALID;
ALTER TABLE processed_documents VALIDATE CONSTRAINT processed_documents_id_check;

ALTER TABLE processing_failures
    ALTER COLUMN source_ref TYPE text COLLATE "C",
    ALTER COLUMN run_id TYPE text COLLATE "C",
    ADD COLUMN skipped boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT processing_failures_attempts_check CHECK (attempts > 0) NOT VALID;
ALTER TABLE processing_failures VALIDATE CONSTRAINT processing_failures_attempts_check;
UPDATE processing_failures SET skipped = true WHERE error_class = 'no_text';

DROP INDEX work_leases_expires_idx;
ALTER TABLE work_leases
    ALTER COLUMN source_ref TYPE text COLLATE "C",
    ALTER COLUMN worker_id TYPE text COLLATE "C",
    ADD CONSTRAINT work_leases_expiry_check CHECK (expires_at > leased_at) NOT VALID;
ALTER TABLE work_leases VALIDATE CONSTRAINT work_leases_expiry_check;

ALTER TABLE topic_cards ALTER COLUMN topic_id TYPE text COLLATE "C";
ALTER TABLE topic_channels ALTER COLUMN topic_id TYPE text COLLATE "C";
ALTER TABLE topic_bundles ALTER COLUMN topic_id TYPE text COLLATE "C";

ALTER TABLE runs
    ALTER COLUMN run_id TYPE text COLLATE "C",
    ADD CONSTRAINT runs_status_check
        CHECK (status IN ('running', 'ok', 'partial', 'failed', 'interrupted')) NOT VALID,
    ADD CONSTRAINT runs_kind_check
        CHECK (kind IN ('process', 'topicize', 'export', 'run', 'ingest', 'prune')) NOT VALID;
ALTER TABLE runs VALIDATE CONSTRAINT runs_status_check;
ALTER TABLE runs VALIDATE CONSTRAINT runs_kind_check;
CREATE INDEX runs_started_idx ON runs USING brin (started_at);

ALTER TABLE run_requests
    ALTER COLUMN run_id TYPE text COLLATE "C",
    ALTER COLUMN source_id TYPE text COLLATE "C";
ALTER TABLE api_keys ALTER COLUMN key_id TYPE text COLLATE "C";
ALTER TABLE api_rate_windows ALTER COLUMN key_id TYPE text COLLATE "C";
