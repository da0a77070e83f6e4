ALTER TABLE ingest_runs
    DROP CONSTRAINT ingest_runs_counts_check,
    ALTER COLUMN source_id TYPE text COLLATE "default",
    ALTER COLUMN run_id TYPE text COLLATE "default";
ALTER TABLE comment_threads_unavailable
    DROP CONSTRAINT comment_threads_unavailable_thread_id_check,
    ALTER COLUMN source_id TYPE text COLLATE "default";
ALTER TABLE comment_cursors
    DROP CONSTRAINT comment_cursors_ids_check,
    ALTER COLUMN source_id TYPE text COLLATE "default";
ALTER TABLE sources
    DROP CONSTRAINT sources_last_post_id_check,
    ALTER COLUMN source_id TYPE text COLLATE "default";
