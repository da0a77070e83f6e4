-- name: export_stream_documents
-- Documents joined with their raw message (type, ids, counters) for the knowledge-base export, in the
-- export's deterministic order (channel, message date, source_ref), optionally one channel and a
-- [since, until) window on the MESSAGE date (not processing time). Streamed as plain tuples: the column
-- order is the order tg_parser/export/writer.py unpacks. Timestamps come back as canonical RFC 3339 text
-- (….ffffffZ) and the JSON columns as their stored compact UTF-8 bytes, which is what the export writes,
-- so no row pays for a parse-and-format (or decode-and-encode) round trip.
-- Read in keyset batches (Database.keyset_batches), each its own short statement: the next batch
-- starts after the last row's (channel_id, message_date, source_ref), given back as read (the
-- message_date text). One channel is channel_lo = channel_hi, every channel the whole bigint range
-- (a range, not "NULL means any", so a generic plan still bounds the scan). The lower bound is the
-- keyset's row value alone (the first batch starts at (channel_lo, since, '')): with a separate
-- `channel_id >= :channel_lo` SQLite seeks on that instead and every batch rescans the index from the
-- start of the range (quadratic in the export); this way each batch seeks to where the last one ended.
-- The upper bound (upto_*, inclusive) ends one part of an export split over processes (tg-parser
-- export --jobs); a whole export passes (channel_hi, until, ''), above every row of the window.
-- Served by: processed_documents_channel_date_idx for the seek and order, raw_messages and
-- raw_message_counters primary keys for the joins (counters: the latest refresh, else the snapshot's).
-- example: channel_hi=9223372036854775807 since=1970-01-01 until=9999-12-31 after_channel=-9223372036854775808 after_date=1970-01-01 after_ref='' upto_channel=9223372036854775807 upto_date=9999-12-31 upto_ref='' batch_size=2000
SELECT d.source_ref, d.channel_id, d.message_date || '' AS message_date, d.processed_at || '' AS processed_at,
       d.text_clean, d.summary, CAST(d.topics AS BLOB) AS topics, CAST(d.entities AS BLOB) AS entities,
       d.language, d.model, d.prompt_id, d.pipeline_version,
       r.message_type, r.message_id, r.thread_id, r.parent_message_id, COALESCE(c.views, r.views) AS views,
       COALESCE(c.forwards, r.forwards) AS forwards, COALESCE(c.replies, r.replies) AS replies,
       r.media_type, r.edit_date || '' AS edit_date, r.source_id
FROM processing.processed_documents AS d
JOIN raw.raw_messages AS r ON r.source_ref = d.source_ref
LEFT JOIN raw.raw_message_counters AS c ON c.source_ref = r.source_ref
WHERE d.channel_id <= :channel_hi
  AND d.message_date >= :since
  AND d.message_date < :until
  AND (d.channel_id, d.message_date, d.source_ref) > (:after_channel, :after_date, :after_ref)
  AND (d.channel_id, d.message_date, d.source_ref) <= (:upto_channel, :upto_date, :upto_ref)
ORDER BY d.channel_id, d.message_date, d.source_ref
LIMIT :batch_size;

-- name: export_document_dates
-- Message dates of a set of documents (a JSON array of source_refs): which topic anchors fall inside
-- the export's date window, decided before the stream starts.
-- Served by: processed_documents primary key.
-- example: refs='["tg:1500000001:post:1000","tg:1500000001:post:1001"]'
SELECT d.source_ref, d.message_date, d.channel_id
FROM processing.processed_documents AS d
WHERE d.source_ref IN (SELECT value FROM json_each(:refs));
