-- name: processing_select_candidates
-- Messages that need processing, in one query (no per-message checks): not yet processed (unless
-- :force), not journaled as a permanent failure (unless :retry_failed; a skip, always), and not under a live lease of
-- another worker. Optional filters by source and channel; :limit caps the batch. Pages continue after the
-- key (:after_channel_id, :after_date, :after_ref) of the previous page's last row (keyset pagination, so
-- a run reads each candidate once and never re-reads the head); the first page passes the lowest key.
-- Served by: raw_messages_channel_date_idx for the order and the keyset bound, the primary keys of
-- processed_documents, processing_failures and work_leases for the anti-joins, raw_message_counters
-- primary key for the latest counters.
SELECT r.source_ref, r.source_id, r.channel_id, r.message_id, r.message_type, r.date, r.edit_date, r.text,
       r.thread_id, r.parent_message_id, COALESCE(c.views, r.views) AS views,
       COALESCE(c.forwards, r.forwards) AS forwards, COALESCE(c.replies, r.replies) AS replies, r.media_type, r.media
FROM raw.raw_messages AS r
LEFT JOIN raw.raw_message_counters AS c ON c.source_ref = r.source_ref
LEFT JOIN processing.processed_documents AS d ON d.source_ref = r.source_ref
LEFT JOIN processing.processing_failures AS f ON f.source_ref = r.source_ref
LEFT JOIN processing.work_leases AS l ON l.source_ref = r.source_ref
WHERE (d.source_ref IS NULL OR :force)
  AND (f.source_ref IS NULL OR NOT f.permanent OR (:retry_failed AND NOT f.skipped))
  AND (l.source_ref IS NULL OR l.expires_at < :now)
  AND (CAST(:source_id AS TEXT) IS NULL OR r.source_id = :source_id)
  AND (CAST(:channel_id AS BIGINT) IS NULL OR r.channel_id = :channel_id)
  AND (r.channel_id, r.date, r.source_ref) > (:after_channel_id, :after_date, :after_ref)
ORDER BY r.channel_id, r.date, r.source_ref
LIMIT :limit;

-- name: processing_get_document
-- One document by its message key. Served by: processed_documents primary key.
SELECT * FROM processing.processed_documents WHERE source_ref = :source_ref;

-- name: processing_stream_documents
-- Documents of the channels in [channel_lo, channel_hi] (one, or the whole bigint range for all) in
-- (channel, message date) order, within [since, until) (the store passes far-past/far-future bounds when
-- unset, so no NULL timestamp needs a type). Read in keyset batches (Database.keyset_batches), each its
-- own short statement: the next batch starts after the last row's (channel_id, message_date, source_ref).
-- Served by: processed_documents_channel_date_idx.
SELECT * FROM processing.processed_documents
WHERE channel_id BETWEEN :channel_lo AND :channel_hi
  AND message_date >= :since
  AND message_date < :until
  AND (channel_id, message_date, source_ref) > (:after_channel, :after_date, :after_ref)
ORDER BY channel_id, message_date, source_ref
LIMIT :batch_size;

-- name: processing_count_documents
-- How many documents exist (optionally of one channel). Served by: processed_documents_channel_date_idx.
SELECT COUNT(*) AS n FROM processing.processed_documents
WHERE (CAST(:channel_id AS BIGINT) IS NULL OR channel_id = :channel_id);
