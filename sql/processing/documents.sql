-- name: processing_select_candidates
-- Messages that need processing, in one query (no per-message checks): not yet processed (unless
-- :force), not journaled as a permanent failure (unless :retry_failed; a skip, always), and not under a live lease of
-- another worker. Optional filters by source and channel; :limit caps the batch. Pages continue after the
-- key (:after_channel_id, :after_date, :after_ref) of the previous page's last row (keyset pagination, so
-- a run reads each candidate once and never re-reads the head); the first page passes the lowest key.
-- The checks are probes per row (`LIMIT 1 OFFSET 0` keeps PostgreSQL from turning them into anti-joins
-- that read whole tables and then sort: the plan the query-plan gate caught with LEFT JOINs), so a page
-- walks raw_messages_channel_date_idx in order and stops at :limit.
-- Served by: raw_messages_channel_date_idx for the order and the keyset bound, the primary keys of
-- processed_documents, processing_failures and work_leases for the probes, raw_message_counters
-- primary key for the latest counters.
-- example: force=true retry_failed=false now=2025-06-01T12:00:00Z source_id=null channel_id=null after_channel_id=-9223372036854775808 after_date=0001-01-01 after_ref='' limit=100
SELECT r.source_ref, r.source_id, r.channel_id, r.message_id, r.message_type, r.date, r.edit_date, r.text,
       r.thread_id, r.parent_message_id, COALESCE(c.views, r.views) AS views,
       COALESCE(c.forwards, r.forwards) AS forwards, COALESCE(c.replies, r.replies) AS replies, r.media_type, r.media
FROM raw.raw_messages AS r
LEFT JOIN raw.raw_message_counters AS c ON c.source_ref = r.source_ref
WHERE (r.channel_id, r.date, r.source_ref) > (:after_channel_id, :after_date, :after_ref)
  AND (CAST(:source_id AS TEXT) IS NULL OR r.source_id = :source_id)
  AND (CAST(:channel_id AS BIGINT) IS NULL OR r.channel_id = :channel_id)
  AND (:force OR NOT EXISTS (
      SELECT 1 FROM processing.processed_documents AS d WHERE d.source_ref = r.source_ref LIMIT 1 OFFSET 0
  ))
  AND NOT EXISTS (
      SELECT 1 FROM processing.processing_failures AS f
      WHERE f.source_ref = r.source_ref AND f.permanent AND (f.skipped OR NOT :retry_failed)
      LIMIT 1 OFFSET 0
  )
  AND NOT EXISTS (
      SELECT 1 FROM processing.work_leases AS l
      WHERE l.source_ref = r.source_ref AND l.expires_at >= :now
      LIMIT 1 OFFSET 0
  )
ORDER BY r.channel_id, r.date, r.source_ref
LIMIT :limit;

-- name: processing_get_document
-- One document by its message key. Served by: processed_documents primary key.
-- example: source_ref=tg:1500000001:post:1000
SELECT * FROM processing.processed_documents WHERE source_ref = :source_ref;

-- name: processing_stream_documents
-- Documents of the channels in [channel_lo, channel_hi] (one, or the whole bigint range for all) in
-- (channel, message date) order, within [since, until) (the store passes far-past/far-future bounds when
-- unset, so no NULL timestamp needs a type). Read in keyset batches (Database.keyset_batches), each its
-- own short statement: the next batch starts after the last row's (channel_id, message_date, source_ref).
-- Served by: processed_documents_channel_date_idx.
-- example: channel_lo=-9223372036854775808 channel_hi=9223372036854775807 since=1970-01-01 until=9999-12-31 after_channel=-9223372036854775808 after_date=1970-01-01 after_ref='' batch_size=2000
SELECT * FROM processing.processed_documents
WHERE channel_id BETWEEN :channel_lo AND :channel_hi
  AND message_date >= :since
  AND message_date < :until
  AND (channel_id, message_date, source_ref) > (:after_channel, :after_date, :after_ref)
ORDER BY channel_id, message_date, source_ref
LIMIT :batch_size;

-- name: processing_count_documents
-- How many documents exist (optionally of one channel). Served by: processed_documents_channel_date_idx.
-- example: channel_id=1500000001
SELECT COUNT(*) AS n FROM processing.processed_documents
WHERE (CAST(:channel_id AS BIGINT) IS NULL OR channel_id = :channel_id);
