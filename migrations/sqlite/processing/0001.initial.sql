-- compatibility: breaking (the first schema: no older code runs without it)
-- processing store: processed documents, failures, work leases, topics, bundles and run reports.

CREATE TABLE processed_documents (
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

CREATE INDEX processed_documents_channel_date_idx ON processed_documents (channel_id, message_date, source_ref);

CREATE TABLE processing_failures (
    source_ref      TEXT NOT NULL PRIMARY KEY,
    channel_id      INTEGER,
    error_class     TEXT NOT NULL,
    error_message   TEXT NOT NULL DEFAULT '',
    permanent       BOOLEAN_INT NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 1,
    first_failed_at TIMESTAMP_TEXT NOT NULL,
    last_failed_at  TIMESTAMP_TEXT NOT NULL,
    run_id          TEXT
);

CREATE TABLE work_leases (
    source_ref TEXT NOT NULL PRIMARY KEY,
    worker_id  TEXT NOT NULL,
    leased_at  TIMESTAMP_TEXT NOT NULL,
    expires_at TIMESTAMP_TEXT NOT NULL
);

CREATE INDEX work_leases_expires_idx ON work_leases (expires_at);

CREATE TABLE topic_cards (
    topic_id   TEXT NOT NULL PRIMARY KEY,
    channel_id INTEGER NOT NULL,
    title      TEXT NOT NULL,
    summary    TEXT NOT NULL DEFAULT '',
    kind       TEXT NOT NULL CHECK (kind IN ('singleton', 'cluster')),
    anchors    JSON_TEXT NOT NULL,
    tags       JSON_TEXT NOT NULL,
    model      TEXT,
    prompt_id  TEXT,
    created_at TIMESTAMP_TEXT NOT NULL,
    updated_at TIMESTAMP_TEXT NOT NULL,
    metadata   JSON_TEXT NOT NULL
);

CREATE INDEX topic_cards_channel_idx ON topic_cards (channel_id, topic_id);

CREATE TABLE topic_channels (
    topic_id   TEXT NOT NULL REFERENCES topic_cards (topic_id) ON DELETE CASCADE,
    channel_id INTEGER NOT NULL,
    PRIMARY KEY (topic_id, channel_id)
);

CREATE INDEX topic_channels_channel_idx ON topic_channels (channel_id, topic_id);

CREATE TABLE topic_bundles (
    topic_id   TEXT NOT NULL PRIMARY KEY REFERENCES topic_cards (topic_id) ON DELETE CASCADE,
    channel_id INTEGER NOT NULL,
    items      JSON_TEXT NOT NULL,
    updated_at TIMESTAMP_TEXT NOT NULL
);

CREATE TABLE runs (
    run_id      TEXT NOT NULL PRIMARY KEY,
    kind        TEXT NOT NULL,
    started_at  TIMESTAMP_TEXT NOT NULL,
    finished_at TIMESTAMP_TEXT,
    status      TEXT NOT NULL,
    params      JSON_TEXT NOT NULL,
    counts      JSON_TEXT NOT NULL,
    error       TEXT
);

CREATE INDEX runs_kind_started_idx ON runs (kind, started_at);
