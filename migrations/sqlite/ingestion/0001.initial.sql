-- compatibility: breaking (the first schema: no older code runs without it)
-- ingestion store: channel sources, per-thread comment cursors, one row per ingestion attempt.

CREATE TABLE sources (
    source_id            TEXT NOT NULL PRIMARY KEY,
    channel_id           INTEGER,
    username             TEXT,
    title                TEXT,
    kind                 TEXT NOT NULL DEFAULT 'telegram' CHECK (kind IN ('telegram', 'export')),
    status               TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused', 'error')),
    include_comments     BOOLEAN_INT NOT NULL DEFAULT 0,
    since_date           TIMESTAMP_TEXT,
    until_date           TIMESTAMP_TEXT,
    last_post_id         INTEGER NOT NULL DEFAULT 0,
    access_hash          INTEGER,
    last_attempt_at      TIMESTAMP_TEXT,
    last_success_at      TIMESTAMP_TEXT,
    fail_count           INTEGER NOT NULL DEFAULT 0,
    last_error           TEXT,
    rate_limit_until     TIMESTAMP_TEXT,
    comments_unavailable BOOLEAN_INT NOT NULL DEFAULT 0,
    created_at           TIMESTAMP_TEXT NOT NULL,
    updated_at           TIMESTAMP_TEXT NOT NULL
);

CREATE INDEX sources_channel_id_idx ON sources (channel_id);
CREATE INDEX sources_status_idx ON sources (status, source_id);

CREATE TABLE comment_cursors (
    source_id       TEXT NOT NULL REFERENCES sources (source_id) ON DELETE CASCADE,
    thread_id       INTEGER NOT NULL,
    last_comment_id INTEGER NOT NULL DEFAULT 0,
    updated_at      TIMESTAMP_TEXT NOT NULL,
    PRIMARY KEY (source_id, thread_id)
);

CREATE TABLE ingest_runs (
    id                INTEGER PRIMARY KEY,
    source_id         TEXT NOT NULL,
    run_id            TEXT NOT NULL,
    started_at        TIMESTAMP_TEXT NOT NULL,
    finished_at       TIMESTAMP_TEXT,
    success           BOOLEAN_INT,
    posts_fetched     INTEGER NOT NULL DEFAULT 0,
    posts_inserted    INTEGER NOT NULL DEFAULT 0,
    comments_fetched  INTEGER NOT NULL DEFAULT 0,
    comments_inserted INTEGER NOT NULL DEFAULT 0,
    versions_recorded INTEGER NOT NULL DEFAULT 0,
    error_class       TEXT,
    error_message     TEXT
);

CREATE INDEX ingest_runs_source_started_idx ON ingest_runs (source_id, started_at);
