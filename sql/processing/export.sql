-- name: export_channel_usernames
-- Public usernames of the channels we know, for t.me links (private channels have none).
-- Served by: a sequential scan of sources (one row per channel).
SELECT channel_id, username FROM ingestion.sources
WHERE channel_id IS NOT NULL AND username IS NOT NULL
ORDER BY channel_id, source_id;

-- name: export_topic_bundles
-- Every topic bundle (supporting items), for resolving topic membership during export.
-- Served by: topic_bundles primary key (full scan; one row per topic).
SELECT * FROM processing.topic_bundles ORDER BY topic_id;

-- name: export_count_documents
-- How many documents an export's window holds (optionally one channel): decides whether the export is
-- split over processes (tg-parser export --jobs) and where the parts end.
-- Served by: processed_documents_channel_date_idx (an index-only range scan).
-- plan: seqscan-ok a whole export counts every document: the planner reads them by a scan or an index-only scan, whichever it costs lower
-- example: channel_lo=-9223372036854775808 channel_hi=9223372036854775807 since=1970-01-01 until=9999-12-31
SELECT count(*) AS documents
FROM processing.processed_documents AS d
WHERE d.channel_id BETWEEN :channel_lo AND :channel_hi
  AND d.message_date >= :since
  AND d.message_date < :until;

-- name: export_split_key
-- The export key (channel_id, message_date, source_ref) of the document at position :skip of the
-- export's order within its window: where one part of an export split over processes ends (tg-parser
-- export --jobs). The key is only handed back to export_stream_documents (its after_*/upto_* bounds), so
-- message_date comes back as its plain text (`|| ''`: the stored text on SQLite, the session's timestamptz
-- output on PostgreSQL, which the stream's CAST reads back to the same instant). Counts documents only
-- (the stream's join to raw_messages is left out: the parts need not be equal, only disjoint and in order).
-- Served by: processed_documents_channel_date_idx (an index range scan of :skip entries).
-- example: channel_lo=-9223372036854775808 channel_hi=9223372036854775807 since=1970-01-01 until=9999-12-31 skip=100
SELECT d.channel_id, d.message_date || '' AS message_date, d.source_ref
FROM processing.processed_documents AS d
WHERE d.channel_id BETWEEN :channel_lo AND :channel_hi
  AND d.message_date >= :since
  AND d.message_date < :until
ORDER BY d.channel_id, d.message_date, d.source_ref
LIMIT 1 OFFSET :skip;
