-- name: metrics_documents
-- How many processed documents exist, for the API's /metrics gauges (read on scrape).
-- Served by: an index-only count of processed_documents_channel_date_idx.
SELECT COUNT(*) AS n FROM processing.processed_documents;

-- name: metrics_failures_by_class
-- Journaled failures per error class and permanence, for /metrics: real failures only (skips are
-- metrics_skipped). Served by: a scan of processing_failures (one row per failing or skipped message,
-- small next to the documents).
SELECT error_class, permanent, COUNT(*) AS n FROM processing.processing_failures
WHERE NOT skipped
GROUP BY error_class, permanent;

-- name: metrics_skipped
-- Messages skipped because there is nothing to process (media only), for /metrics.
-- Served by: a scan of processing_failures.
SELECT COUNT(*) AS n FROM processing.processing_failures WHERE skipped;

-- name: metrics_live_leases
-- Work leases not yet expired (messages being processed right now), for /metrics.
-- Served by: a sequential scan of work_leases (the leases in flight; see processing_list_leases).
-- example: now=2025-06-01T12:00:00Z
SELECT COUNT(*) AS n FROM processing.work_leases WHERE expires_at > :now;

-- name: metrics_topics
-- How many topic cards exist, for /metrics. Served by: topic_cards primary key.
SELECT COUNT(*) AS n FROM processing.topic_cards;
