-- Back to 0003: the table without its CHECKs (rebuilt the same way, the same guard first), and the
-- triggers that enforced them.

CREATE TEMP TABLE raw_checks_guard (
    foreign_keys INTEGER CONSTRAINT run_this_migration_with_foreign_keys_off CHECK (foreign_keys = 0)
);
INSERT INTO raw_checks_guard (foreign_keys) SELECT foreign_keys FROM pragma_foreign_keys;
DROP TABLE raw_checks_guard;

CREATE TABLE raw_messages_old (
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
INSERT INTO raw_messages_old (
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
ALTER TABLE raw_messages_old RENAME TO raw_messages;
CREATE INDEX raw_messages_channel_date_idx ON raw_messages (channel_id, date, source_ref);

CREATE TRIGGER raw_messages_check_insert BEFORE INSERT ON raw_messages
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: raw_messages_message_id_check (message_id > 0)')
    WHERE NOT (NEW.message_id > 0);
    SELECT RAISE(ABORT, 'CHECK constraint failed: raw_messages_source_ref_check (source_ref = tg:<channel_id>:<message_type>:<message_id>)')
    WHERE NOT (NEW.source_ref = 'tg:' || NEW.channel_id || ':' || NEW.message_type || ':' || NEW.message_id);
END;

CREATE TRIGGER raw_messages_check_update
BEFORE UPDATE OF source_ref, channel_id, message_type, message_id ON raw_messages
BEGIN
    SELECT RAISE(ABORT, 'CHECK constraint failed: raw_messages_message_id_check (message_id > 0)')
    WHERE NOT (NEW.message_id > 0);
    SELECT RAISE(ABORT, 'CHECK constraint failed: raw_messages_source_ref_check (source_ref = tg:<channel_id>:<message_type>:<message_id>)')
    WHERE NOT (NEW.source_ref = 'tg:' || NEW.channel_id || ':' || NEW.message_type || ':' || NEW.message_id);
END;
