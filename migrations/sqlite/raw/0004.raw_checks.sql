-- depends: 0003.counters_hygiene
-- compatibility: additive (the same columns and rules; only how SQLite enforces them changes)
-- raw_messages' CHECKs become table constraints instead of the triggers of 0003 (issue 14). A trigger
-- runs as a sub-program for every inserted row, about a third of the cost of storing a message on a
-- bulk import; a CHECK is a test inline in the INSERT. The rules and their names are PostgreSQL's
-- (raw 0003): a positive message id, and source_ref = tg:<channel_id>:<message_type>:<message_id>.
--
-- SQLite adds a CHECK only by rebuilding the table (https://sqlite.org/lang_altertable.html, "Making
-- Other Kinds Of Table Schema Changes"): create the new definition, copy the rows (the CHECKs read
-- every one of them: a row the triggers would have refused stops the migration), drop the old table,
-- rename the new one. The copy keeps each row's rowid. It takes about as long as copying the archive.
--
-- raw_message_versions, raw_message_counters and pending_work reference raw_messages: with foreign
-- keys enforced, DROP TABLE would delete their rows first (ON DELETE CASCADE). yoyo's connection, like
-- the sqlite3 shell's, leaves them off (SQLite's default); the first statements below stop the
-- migration, before anything changes, on a connection that has them on.

CREATE TEMP TABLE raw_checks_guard (
    foreign_keys INTEGER CONSTRAINT run_this_migration_with_foreign_keys_off CHECK (foreign_keys = 0)
);
INSERT INTO raw_checks_guard (foreign_keys) SELECT foreign_keys FROM pragma_foreign_keys;
DROP TABLE raw_checks_guard;

DROP TRIGGER raw_messages_check_update;
DROP TRIGGER raw_messages_check_insert;

CREATE TABLE raw_messages_new (
    source_ref        TEXT NOT NULL PRIMARY KEY,
    source_id         TEXT,
    channel_id        INTEGER NOT NULL,
    message_id        INTEGER NOT NULL CONSTRAINT raw_messages_message_id_check CHECK (message_id > 0),
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
    inserted_at       TIMESTAMP_TEXT NOT NULL,
    CONSTRAINT raw_messages_source_ref_check
        CHECK (source_ref = 'tg:' || channel_id || ':' || message_type || ':' || message_id)
);
INSERT INTO raw_messages_new (
    rowid, source_ref, source_id, channel_id, message_id, message_type, date, edit_date, text, thread_id,
    parent_message_id, grouped_id, views, forwards, replies, media_type, media, raw_payload,
    payload_truncated, payload_size, inserted_at
)
SELECT rowid, source_ref, source_id, channel_id, message_id, message_type, date, edit_date, text, thread_id,
       parent_message_id, grouped_id, views, forwards, replies, media_type, media, raw_payload,
       payload_truncated, payload_size, inserted_at
FROM raw_messages
ORDER BY rowid;
DROP TABLE raw_messages;
ALTER TABLE raw_messages_new RENAME TO raw_messages;
CREATE INDEX raw_messages_channel_date_idx ON raw_messages (channel_id, date, source_ref);
