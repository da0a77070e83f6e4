-- depends: 0002.comment_threads
-- compatibility: additive (collation and CHECKs older code satisfies)
-- ingestion store hygiene (issue 17); see the PostgreSQL migration. The CHECKs as triggers that reject
-- a bad row on INSERT or UPDATE with the constraint's name (SQLite adds a CHECK only by rebuilding the
-- table, and dropping `sources` for a rebuild would cascade to its cursors). COLLATE "C" is
-- PostgreSQL's: SQLite compares text by bytes already.

CREATE TRIGGER sources_check_insert BEFORE INSERT ON sources
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: sources_last_post_id_check (last_post_id >= 0)')
    WHERE NOT (NEW.last_post_id >= 0);
END;

CREATE TRIGGER sources_check_update BEFORE UPDATE OF last_post_id ON sources
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: sources_last_post_id_check (last_post_id >= 0)')
    WHERE NOT (NEW.last_post_id >= 0);
END;

CREATE TRIGGER comment_cursors_check_insert BEFORE INSERT ON comment_cursors
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: comment_cursors_ids_check (thread_id > 0 AND last_comment_id >= 0)')
    WHERE NOT (NEW.thread_id > 0 AND NEW.last_comment_id >= 0);
END;

CREATE TRIGGER comment_cursors_check_update BEFORE UPDATE OF thread_id, last_comment_id ON comment_cursors
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: comment_cursors_ids_check (thread_id > 0 AND last_comment_id >= 0)')
    WHERE NOT (NEW.thread_id > 0 AND NEW.last_comment_id >= 0);
END;

CREATE TRIGGER comment_threads_unavailable_check_insert BEFORE INSERT ON comment_threads_unavailable
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: comment_threads_unavailable_thread_id_check (thread_id > 0)')
    WHERE NOT (NEW.thread_id > 0);
END;

CREATE TRIGGER ingest_runs_check_insert BEFORE INSERT ON ingest_runs
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: ingest_runs_counts_check (counts >= 0)')
    WHERE NOT (NEW.posts_fetched >= 0 AND NEW.posts_inserted >= 0 AND NEW.comments_fetched >= 0
               AND NEW.comments_inserted >= 0 AND NEW.versions_recorded >= 0);
END;

CREATE TRIGGER ingest_runs_check_update
BEFORE UPDATE OF posts_fetched, posts_inserted, comments_fetched, comments_inserted, versions_recorded ON ingest_runs
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: ingest_runs_counts_check (counts >= 0)')
    WHERE NOT (NEW.posts_fetched >= 0 AND NEW.posts_inserted >= 0 AND NEW.comments_fetched >= 0
               AND NEW.comments_inserted >= 0 AND NEW.versions_recorded >= 0);
END;
