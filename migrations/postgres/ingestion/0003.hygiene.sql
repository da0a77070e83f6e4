-- depends: 0002.comment_threads
-- compatibility: additive (collation and CHECKs older code satisfies)
-- ingestion store hygiene (issue 17): text keys compare with COLLATE "C" (byte order: SQLite's order,
-- faster, immune to glibc collation changes), and CHECKs on the message ids the cursors keep (never
-- negative; a comment thread is a channel post, so its id is positive) and on the counts of an
-- ingestion attempt. Added NOT VALID, then VALIDATE (see raw 0003 on why both are here).
-- `db prune` deletes old ingest_runs in batches along the primary key (ids are assigned in started_at
-- order), so no index is added for it.

ALTER TABLE sources
    ALTER COLUMN source_id TYPE text COLLATE "C",
    ADD CONSTRAINT sources_last_post_id_check CHECK (last_post_id >= 0) NOT VALID;
ALTER TABLE sources VALIDATE CONSTRAINT sources_last_post_id_check;

ALTER TABLE comment_cursors
    ALTER COLUMN source_id TYPE text COLLATE "C",
    ADD CONSTRAINT comment_cursors_ids_check CHECK (thread_id > 0 AND last_comment_id >= 0) NOT VALID;
ALTER TABLE comment_cursors VALIDATE CONSTRAINT comment_cursors_ids_check;

ALTER TABLE comment_threads_unavailable
    ALTER COLUMN source_id TYPE text COLLATE "C",
    ADD CONSTRAINT comment_threads_unavailable_thread_id_check CHECK (thread_id > 0) NOT VALID;
ALTER TABLE comment_threads_unavailable VALIDATE CONSTRAINT comment_threads_unavailable_thread_id_check;

ALTER TABLE ingest_runs
    ALTER COLUMN source_id TYPE text COLLATE "C",
    ALTER COLUMN run_id TYPE text COLLATE "C",
    ADD CONSTRAINT ingest_runs_counts_check CHECK (
        posts_fetched >= 0 AND posts_inserted >= 0 AND comments_fetched >= 0
        AND comments_inserted >= 0 AND versions_recorded >= 0
    ) NOT VALID;
ALTER TABLE ingest_runs VALIDATE CONSTRAINT ingest_runs_counts_check;
