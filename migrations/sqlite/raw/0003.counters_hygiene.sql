-- depends: 0002.pending_work
-- compatibility: breaking (older code would refresh counters on raw_messages, which readers no longer prefer)
-- raw store hygiene (issue 17); see the PostgreSQL migration for the reasons.
-- 1. Counters refreshed on re-read go to a narrow table; raw_messages keeps them as first seen and
--    readers take COALESCE(counters, snapshot), so existing rows need no copy.
-- 2. raw_messages_thread_idx and raw_messages_source_idx served no query the app runs: dropped.
-- 3. (PostgreSQL only: COLLATE "C" and lz4. SQLite compares text by bytes already and has no TOAST.)
-- 4. The CHECKs of the PostgreSQL side (a positive message id, source_ref consistent with its parts)
--    as triggers: SQLite adds a CHECK only by rebuilding the table, which for raw_messages is a copy of
--    the whole archive (and dropping it would cascade to raw_message_versions). The triggers reject a
--    bad row on INSERT or UPDATE with the constraint's name, as the CHECK does on PostgreSQL; like a
--    NOT VALID constraint they do not re-read the rows already stored (every one was written through
--    make_source_ref).

DROP INDEX raw_messages_thread_idx;
DROP INDEX raw_messages_source_idx;

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

-- The latest counters of a message once a re-read saw them change (no row until then).
CREATE TABLE raw_message_counters (
    source_ref  TEXT NOT NULL PRIMARY KEY REFERENCES raw_messages (source_ref) ON DELETE CASCADE,
    views       INTEGER,
    forwards    INTEGER,
    replies     INTEGER,
    observed_at TIMESTAMP_TEXT NOT NULL
);
