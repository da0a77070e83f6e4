-- name: metrics_raw_messages
-- How many raw messages are stored, for the API's /metrics gauges (read on scrape).
-- Served by: an index-only count of raw_messages_channel_date_idx.
SELECT COUNT(*) AS n FROM raw.raw_messages;
