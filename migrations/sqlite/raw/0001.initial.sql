-- compatibility: breaking (the first schema: no older code runs without it)
-- raw store: messages as first seen (a snapshot), and later observations that differ.

CREATE TABLE raw_messages (
    source_ref        TEXT NOT NULL PRIMARY KEY,
    source_id         TEXT,
    channel_id        INTEGER NOT NULL,
    message_id        INTEGER NOT NULL,
    message_type      TEXT NOT NULL CHECK (message_type IN ('post', 'comment')),
    date              TIMESTAMP_TEXT NOT NULL,
    edit_date         TIMESTAMP_TEXT,
    text              TEXT NOT NULL DEFAULT '',
    thread_id         INTEGER,
    parent_message_id INTEGER,
    grouped_id        INTEGER,
    views             INTEGER,
    forwards          INTEGER,
    replies           INTEGER,
    media_type        TEXT,
    media             JSON_TEXT,
    raw_payload       JSON_TEXT NOT NULL,
    payload_truncated BOOLEAN_INT NOT NULL DEFAULT 0,
    payload_size      INTEGER,
    inserted_at       TIMESTAMP_TEXT NOT NULL
);

CREATE INDEX raw_messages_channel_date_idx ON raw_messages (channel_id, date, source_ref);
CREATE INDEX raw_messages_source_idx ON raw_messages (source_id, message_type, message_id);
CREATE INDEX raw_messages_thread_idx ON raw_messages (channel_id, thread_id, message_id);

CREATE TABLE raw_message_versions (
    id          INTEGER PRIMARY KEY,
    source_ref  TEXT NOT NULL REFERENCES raw_messages (source_ref) ON DELETE CASCADE,
    observed_at TIMESTAMP_TEXT NOT NULL,
    edit_date   TIMESTAMP_TEXT,
    text        TEXT NOT NULL DEFAULT '',
    raw_payload JSON_TEXT NOT NULL
);

CREATE INDEX raw_message_versions_ref_idx ON raw_message_versions (source_ref, id);
