-- Back to 0002/0001: the latest counters fold back into raw_messages (as they were kept before).
UPDATE raw_messages
SET views = COALESCE((SELECT c.views FROM raw_message_counters AS c WHERE c.source_ref = raw_messages.source_ref), views),
    forwards = COALESCE((SELECT c.forwards FROM raw_message_counters AS c WHERE c.source_ref = raw_messages.source_ref), forwards),
    replies = COALESCE((SELECT c.replies FROM raw_message_counters AS c WHERE c.source_ref = raw_messages.source_ref), replies)
WHERE source_ref IN (SELECT source_ref FROM raw_message_counters);
DROP TABLE raw_message_counters;

DROP TRIGGER raw_messages_check_update;
DROP TRIGGER raw_messages_check_insert;

CREATE INDEX raw_messages_source_idx ON raw_messages (source_id, message_type, message_id);
CREATE INDEX raw_messages_thread_idx ON raw_messages (channel_id, thread_id, message_id);
