ALTER TABLE api_rate_windows ALTER COLUMN key_id TYPE text COLLATE "default";
ALTER TABLE api_keys ALTER COLUMN key_id TYPE text COLLATE "default";
ALTER TABLE run_requests
    ALTER COLUMN run_id TYPE text COLLATE "default",
    ALTER COLUMN source_id TYPE text COLLATE "default";

DROP INDEX runs_started_idx;
ALTER TABLE runs
    DROP CONSTRAINT runs_kind_check,
    DROP CONSTRAINT runs_status_check,
    ALTER COLUMN run_id TYPE text COLLATE "default";

ALTER TABLE topic_bundles ALTER COLUMN topic_id TYPE text COLLATE "default";
ALTER TABLE topic_channels ALTER COLUMN topic_id TYPE text COLLATE "default";
ALTER TABLE topic_cards ALTER COLUMN topic_id TYPE text COLLATE "default";

ALTER TABLE work_leases
    DROP CONSTRAINT work_leases_expiry_check,
    ALTER COLUMN source_ref TYPE text COLLATE "default",
    ALTER COLUMN worker_id TYPE text COLLATE "default";
CREATE INDEX work_leases_expires_idx ON work_leases (expires_at);

ALTER TABLE processing_failures
    DROP CONSTRAINT processing_failures_attempts_check,
    DROP COLUMN skipped,
    ALTER COLUMN source_ref TYPE text COLLATE "default",
    ALTER COLUMN run_id TYPE text COLLATE "default";

ALTER TABLE processed_documents
    DROP CONSTRAINT processed_documents_id_check,
    ALTER COLUMN source_ref TYPE text COLLATE "default",
    ALTER COLUMN id TYPE text COLLATE "default";
ALTER TABLE processed_documents ADD CONSTRAINT processed_documents_id_key UNIQUE (id);
