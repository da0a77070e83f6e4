-- Back to 0002/0001: the latest counters fold back into raw_messages (as they were kept before).
UPDATE raw_messages AS m
SET views = COALESCE(c.views, m.views),
    forwards = COALESCE(c.forwards, m.forwards),
    replies = COALESCE(c.replies, m.replies)
FROM raw_message_counters AS c
WHERE c.source_ref = m.source_ref;
DROP TABLE raw_message_counters;

ALTER TABLE raw_messages DROP CONSTRAINT raw_messages_source_ref_check;
ALTER TABLE raw_messages DROP CONSTRAINT raw_messages_message_id_check;

CREATE INDEX raw_messages_source_idx ON raw_messages (source_id, message_type, message_id);
CREATE INDEX raw_messages_thread_idx ON raw_messages (channel_id, thread_id, message_id);

DO $$
BEGIN
    IF (SELECT 'lz4' = ANY (enumvals) FROM pg_settings WHERE name = 'default_toast_compression') THEN
        ALTER TABLE raw_messages
            ALTER COLUMN raw_payload SET COMPRESSION default,
            ALTER COLUMN media SET COMPRESSION default;
        ALTER TABLE raw_message_versions ALTER COLUMN raw_payload SET COMPRESSION default;
    END IF;
    IF to_regclass('pending_work') IS NOT NULL THEN
        ALTER TABLE pending_work
            ALTER COLUMN source_ref TYPE text COLLATE "default",
            ALTER COLUMN source_id TYPE text COLLATE "default";
    END IF;
END
$$;

ALTER TABLE raw_message_versions ALTER COLUMN source_ref TYPE text COLLATE "default";
ALTER TABLE raw_messages
    ALTER COLUMN source_ref TYPE text COLLATE "default",
    ALTER COLUMN source_id TYPE text COLLATE "default";
