-- depends: 0004.named_locks
-- compatibility: additive (new tables older code neither reads nor needs to fill)
-- ingestion store (issue 16): comments read from the linked discussion group's own history; see the
-- PostgreSQL migration for what each column means. Existing installs: a source's stream starts at the
-- highest of its per-thread cursors, so nothing is read twice.

CREATE TABLE discussion_cursors (
    source_id       TEXT NOT NULL PRIMARY KEY REFERENCES sources (source_id) ON DELETE CASCADE,
    chat_id         INTEGER,
    access_hash     INTEGER,
    last_message_id INTEGER NOT NULL DEFAULT 0,
    floor_id        INTEGER NOT NULL DEFAULT 0,
    history_error   TEXT,
    checked_at      TIMESTAMP_TEXT,
    updated_at      TIMESTAMP_TEXT NOT NULL,
    CONSTRAINT discussion_cursors_ids_check CHECK (floor_id >= 0 AND last_message_id >= floor_id)
);

CREATE TABLE discussion_threads (
    source_id  TEXT NOT NULL REFERENCES sources (source_id) ON DELETE CASCADE,
    root_id    INTEGER NOT NULL,
    post_id    INTEGER,
    post_date  TIMESTAMP_TEXT,
    PRIMARY KEY (source_id, root_id),
    CONSTRAINT discussion_threads_ids_check CHECK (root_id > 0 AND (post_id IS NULL OR post_id > 0))
);

INSERT INTO discussion_cursors (source_id, last_message_id, floor_id, updated_at)
SELECT source_id, MAX(last_comment_id), MAX(last_comment_id), MAX(updated_at)
FROM comment_cursors
GROUP BY source_id;
