-- name: metrics_documents
-- How many processed documents exist, for the API's /metrics gauges (read on scrape).
-- Served by: an index-only count of processed_documents_channel_date_idx.
SELECT COUNT(*) AS n FROM processing.processed_documents;

-- name: metrics_failures_by_class
-- Journaled failures per error class and permanence, for /metrics. Served by: a scan of
-- processing_failures (one row per failing message, small next to the documents).
SELECT error_class, permanent, COUNT(*) AS n FROM processing.processing_failures GROUP BY error_class, permanent;

-- name: metrics_live_leases
-- Work leases not yet expired (messages being processed right now), for /metrics.
-- Served by: work_leases_expires_idx.
SELECT COUNT(*) AS n FROM processing.work_leases WHERE expires_at > :now;

-- name: metrics_topics
-- How many topic cards exist, for /metrics. Served by: topic_cards primary key.
SELECT COUNT(*) AS n FROM processing.topic_cards;
