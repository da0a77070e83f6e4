-- name: processing_read_ahead
-- Touch what processing these queued messages (a JSON array of {source_ref, channel_id, date}) reads:
-- each one's raw row (primary-key leaf and heap page), counters row and failure-journal row, the leaf
-- of the documents' primary key that the claim's lease check and the document insert probe, and the
-- leaf of processed_documents_channel_date_idx the insert adds its entry to (the document's
-- message_date is the message's date). The process coordinator runs it from a few sessions at once,
-- ahead of its claims (processing/read_ahead.py): a session reads a B-tree leaf only when its descent
-- reaches it, one read at a time, so messages spread over a big archive cost the claim and the write a
-- random read per index each; several sessions overlap those reads and the claim and the write find the
-- pages in shared buffers. Returns the seconds the server spent (from the statement's start to the end
-- of the probes: whether the pages were cached shows there) and a sum nobody uses (a probe whose value
-- went unused could be planned away).
-- Served by: the primary keys of raw_messages, raw_message_counters, processing_failures and
-- processed_documents; processed_documents_channel_date_idx.
-- example: keys='[{"source_ref":"tg:1500000001:post:1000","channel_id":1500000001,"date":"2025-06-01T12:00:00Z"}]'
SELECT probes.touched, EXTRACT(EPOCH FROM clock_timestamp() - statement_timestamp()) AS seconds
FROM (
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
          ) AS near)
    ), 0) AS touched
    FROM jsonb_to_recordset(CAST(:keys AS JSONB)) AS k(source_ref TEXT, channel_id BIGINT, date TIMESTAMPTZ)
) AS probes;
