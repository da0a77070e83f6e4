-- name: metrics_raw_messages
-- How many raw messages are stored, for the API's /metrics gauges (read on scrape).
-- Served by: an index-only count of raw_messages_channel_date_idx.
-- plan: seqscan-ok counts every stored message for /metrics; the planner reads them by a scan or an index-only scan, whichever it costs lower
SELECT COUNT(*) AS n FROM raw.raw_messages;
