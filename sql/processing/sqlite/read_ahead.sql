-- name: processing_read_ahead
-- PostgreSQL's processing_read_ahead on SQLite, the same probes of the same rows and index entries
-- (a JSON array of {source_ref, channel_id, date}); `seconds` is NULL (SQLite has no clock inside a
-- statement). The tool does not run it here: one process reads its own files, so there are no other
-- sessions' reads to overlap (Database.reads_ahead_in_sessions); it keeps the catalogue's names the
-- same on both dialects and can be run by hand (`tg-parser sql explain processing_read_ahead`).
-- Served by: the primary keys of raw_messages, raw_message_counters, processing_failures and
-- processed_documents; processed_documents_channel_date_idx.
-- example: keys='[{"source_ref":"tg:1500000001:post:1000","channel_id":1500000001,"date":"2025-06-01T12:00:00Z"}]'
SELECT COALESCE(SUM(
    COALESCE((SELECT length(r.text) FROM raw.raw_messages AS r WHERE r.source_ref = k.source_ref), 0)
    + COALESCE((SELECT c.views FROM raw.raw_message_counters AS c WHERE c.source_ref = k.source_ref), 0)
    + (SELECT count(*) FROM processing.processing_failures AS f WHERE f.source_ref = k.source_ref)
    + (SELECT count(*) FROM processing.processed_documents AS d WHERE d.source_ref = k.source_ref)
    + (SELECT count(*) FROM (
          SELECT 1 FROM processing.processed_documents AS d
          WHERE d.channel_id = k.channel_id AND d.message_date = k.date AND d.source_ref >= k.source_ref
          ORDER BY d.channel_id, d.message_date, d.source_ref
          LIMIT 1
      ))
), 0) AS touched, NULL AS seconds
FROM (
    SELECT json_extract(j.value, '$.source_ref') AS source_ref, json_extract(j.value, '$.channel_id') AS channel_id,
           json_extract(j.value, '$.date') AS date
    FROM json_each(:keys) AS j
) AS k;
