DROP TABLE raw_message_versions;
DROP TABLE raw_messages;
