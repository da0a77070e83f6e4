DROP TABLE topic_channel_state;
