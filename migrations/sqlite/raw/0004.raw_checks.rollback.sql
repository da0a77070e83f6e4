-- Back to 0003: its triggers again. The table keeps its CHECK constraints (they enforce the same two
-- rules under the same names, so code of 0003's time behaves the same): taking them out would mean
-- rebuilding the table, a copy of the whole archive, for no change in behaviour. Until 0003 is rolled
-- back too, a bad row is refused by the trigger, which runs first, with the message 0003 gave.

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
