-- name: pending_candidates
-- Messages waiting in the pending-work queue (raw.pending_work), a page at a time in (channel, date, ref)
-- order after the key (:after_channel_id, :after_date, :after_ref): what a run would take, read without
-- locking (the dry run). The page is :limit queue rows without a live lease (:now), taken in index order
-- first (the `page` step); only then are its rows joined to raw_messages. `done` marks a row whose
-- message has a document or a permanent failure (unless :retry_failed) already: a crash between the two
-- stores' writes can leave one queued, and on SQLite the migration that created the queue queued every
-- stored message. Callers pass done rows by (the claim deletes them) and continue after the page's last
-- row, done or not; the queue ends at an empty page. The other columns are processing_select_candidates'.
-- The checks are probes per row (`LIMIT 1 OFFSET 0` keeps PostgreSQL from turning them into joins over
-- whole tables), so the cost is the page, whatever the size of raw_messages or of the queue.
-- Served by: pending_work_channel_date_idx for the order and the keyset bound; the primary keys of
-- work_leases, raw_messages, raw_message_counters, processed_documents and processing_failures.
-- example: after_channel_id=-9223372036854775808 after_date=0001-01-01 after_ref='' source_id=null channel_id=null now=2025-06-01T12:00:00Z limit=100 retry_failed=false
WITH page AS MATERIALIZED (
    SELECT p.source_ref, p.channel_id, p.date FROM raw.pending_work AS p
    WHERE (p.channel_id, p.date, p.source_ref) > (:after_channel_id, :after_date, :after_ref)
      AND (CAST(:source_id AS TEXT) IS NULL OR p.source_id = :source_id)
      AND (CAST(:channel_id AS BIGINT) IS NULL OR p.channel_id = :channel_id)
      AND NOT EXISTS (
          SELECT 1 FROM processing.work_leases AS l
          WHERE l.source_ref = p.source_ref AND l.expires_at >= :now
          LIMIT 1 OFFSET 0
      )
    ORDER BY p.channel_id, p.date, p.source_ref
    LIMIT :limit
)
SELECT r.source_ref, r.source_id, r.channel_id, r.message_id, r.message_type, r.date, r.edit_date, r.text,
       r.thread_id, r.parent_message_id, COALESCE(c.views, r.views) AS views,
       COALESCE(c.forwards, r.forwards) AS forwards, COALESCE(c.replies, r.replies) AS replies, r.media_type,
       r.media, EXISTS (
           SELECT 1 FROM processing.processed_documents AS d WHERE d.source_ref = page.source_ref LIMIT 1 OFFSET 0
       ) OR EXISTS (
           SELECT 1 FROM processing.processing_failures AS f
           WHERE f.source_ref = page.source_ref AND f.permanent AND (f.skipped OR NOT :retry_failed)
           LIMIT 1 OFFSET 0
       ) AS done
FROM page
JOIN raw.raw_messages AS r ON r.source_ref = page.source_ref
LEFT JOIN raw.raw_message_counters AS c ON c.source_ref = page.source_ref
ORDER BY page.channel_id, page.date, page.source_ref;

-- name: pending_claim
-- The next page of queued messages for one worker's claim, as pending_candidates (same filters, order and
-- columns; an empty page means the queue is done) but for `done`, which flags permanent failures only:
-- whether a message has a document is looked up once, by processing_unclaim_done, which the claim runs
-- in the same transaction after leasing the page (with a later snapshot; the refs it gives back are the
-- page's done messages too). SQLite has one writer: the claim transaction (BEGIN IMMEDIATE) holds the
-- database, so no other worker can take these rows before it leases them. The PostgreSQL variant locks
-- the page's queue rows FOR UPDATE SKIP LOCKED instead.
-- Served by: pending_work_channel_date_idx; the primary keys of work_leases, raw_messages,
-- raw_message_counters and processing_failures.
-- example: after_channel_id=-9223372036854775808 after_date=0001-01-01 after_ref='' source_id=null channel_id=null now=2025-06-01T12:00:00Z limit=100 retry_failed=false
WITH page AS MATERIALIZED (
    SELECT p.source_ref, p.channel_id, p.date FROM raw.pending_work AS p
    WHERE (p.channel_id, p.date, p.source_ref) > (:after_channel_id, :after_date, :after_ref)
      AND (CAST(:source_id AS TEXT) IS NULL OR p.source_id = :source_id)
      AND (CAST(:channel_id AS BIGINT) IS NULL OR p.channel_id = :channel_id)
      AND NOT EXISTS (
          SELECT 1 FROM processing.work_leases AS l
          WHERE l.source_ref = p.source_ref AND l.expires_at >= :now
          LIMIT 1 OFFSET 0
      )
    ORDER BY p.channel_id, p.date, p.source_ref
    LIMIT :limit
)
SELECT r.source_ref, r.source_id, r.channel_id, r.message_id, r.message_type, r.date, r.edit_date, r.text,
       r.thread_id, r.parent_message_id, COALESCE(c.views, r.views) AS views,
       COALESCE(c.forwards, r.forwards) AS forwards, COALESCE(c.replies, r.replies) AS replies, r.media_type,
       r.media, EXISTS (
           SELECT 1 FROM processing.processing_failures AS f
           WHERE f.source_ref = page.source_ref AND f.permanent AND (f.skipped OR NOT :retry_failed)
           LIMIT 1 OFFSET 0
       ) AS done
FROM page
JOIN raw.raw_messages AS r ON r.source_ref = page.source_ref
LEFT JOIN raw.raw_message_counters AS c ON c.source_ref = page.source_ref
ORDER BY page.channel_id, page.date, page.source_ref;

-- name: pending_lapsed
-- Queued messages whose lease lapsed while another worker held it (its process died): what a running
-- worker takes over, every quarter of its lease, besides its own pages (those pass a message once, so
-- one leased by a worker that died behind the page's key would wait for the next run otherwise). Same
-- filters, order, columns and `done` flag as pending_claim; messages with a document are left out of the
-- page itself, so they cannot fill it.
-- Served by: a sequential scan of work_leases (the leases in flight), the primary keys of pending_work,
-- raw_messages, raw_message_counters, processed_documents and processing_failures.
-- example: worker_id=host-a:4242 now=2025-06-01T12:00:00Z source_id=null channel_id=null limit=100 retry_failed=false
WITH page AS MATERIALIZED (
    SELECT p.source_ref, p.channel_id, p.date
    FROM processing.work_leases AS l
    JOIN raw.pending_work AS p ON p.source_ref = l.source_ref
    WHERE l.expires_at < :now AND l.worker_id <> :worker_id
      AND NOT EXISTS (SELECT 1 FROM processing.processed_documents AS d WHERE d.source_ref = l.source_ref)
      AND (CAST(:source_id AS TEXT) IS NULL OR p.source_id = :source_id)
      AND (CAST(:channel_id AS BIGINT) IS NULL OR p.channel_id = :channel_id)
    ORDER BY p.channel_id, p.date, p.source_ref
    LIMIT :limit
)
SELECT r.source_ref, r.source_id, r.channel_id, r.message_id, r.message_type, r.date, r.edit_date, r.text,
       r.thread_id, r.parent_message_id, COALESCE(c.views, r.views) AS views,
       COALESCE(c.forwards, r.forwards) AS forwards, COALESCE(c.replies, r.replies) AS replies, r.media_type,
       r.media, EXISTS (
           SELECT 1 FROM processing.processed_documents AS d WHERE d.source_ref = page.source_ref LIMIT 1 OFFSET 0
       ) OR EXISTS (
           SELECT 1 FROM processing.processing_failures AS f
           WHERE f.source_ref = page.source_ref AND f.permanent AND (f.skipped OR NOT :retry_failed)
           LIMIT 1 OFFSET 0
       ) AS done
FROM page
JOIN raw.raw_messages AS r ON r.source_ref = page.source_ref
LEFT JOIN raw.raw_message_counters AS c ON c.source_ref = page.source_ref
ORDER BY page.channel_id, page.date, page.source_ref;

-- name: pending_enqueue_rows
-- Queue newly stored messages given row by row (the bulk import's tuple path, RawStore.store_tuples),
-- in the transaction that inserted them: the values are the ones just inserted into raw_messages, so no
-- lookup of the stored row is needed. A ref already queued is left alone.
-- Served by: pending_work primary key.
-- example: source_ref=tg:1500000001:post:1000 channel_id=1500000001 date=2025-05-31T09:30:00Z source_id=durov
INSERT INTO raw.pending_work (source_ref, channel_id, date, source_id)
VALUES (:source_ref, :channel_id, :date, :source_id)
ON CONFLICT (source_ref) DO NOTHING;

-- name: pending_requeue_failed
-- `process --retry-failed`: queue again the messages journaled as permanent failures (optionally of one
-- source or channel), not the skips (media only: nothing to send, retrying cannot change that); the run's writes take them out again when they succeed or fail for good.
-- Served by: a scan of processing_failures (the journal); raw_messages primary key for the join.
-- example: source_id=durov channel_id=1500000001
INSERT INTO raw.pending_work (source_ref, channel_id, date, source_id)
SELECT r.source_ref, r.channel_id, r.date, r.source_id
FROM processing.processing_failures AS f
JOIN raw.raw_messages AS r ON r.source_ref = f.source_ref
WHERE f.permanent AND NOT f.skipped
  AND (CAST(:source_id AS TEXT) IS NULL OR r.source_id = :source_id)
  AND (CAST(:channel_id AS BIGINT) IS NULL OR r.channel_id = :channel_id)
ON CONFLICT (source_ref) DO NOTHING;

-- name: pending_count
-- How many messages are queued (diagnostics, the benchmark). Served by: a scan of pending_work (the work).
-- plan: seqscan-ok counts the whole queue (diagnostics): reading it is the work
SELECT COUNT(*) AS n FROM raw.pending_work;

-- name: pending_peek
-- The keys of the next queued messages after (:after_channel_id, :after_date, :after_ref), read without
-- locking: what the next claim will probably take, for the process coordinator's read-ahead (its other
-- sessions bring those messages' index leaves and rows into the cache while the claim waits on its own
-- reads). Rows other workers hold are not left out: reading ahead for them costs a few probes, nothing else.
-- Served by: pending_work_channel_date_idx for the order and the keyset bound.
-- example: after_channel_id=-9223372036854775808 after_date=0001-01-01 after_ref='' source_id=null channel_id=null limit=100
SELECT p.source_ref, p.channel_id, p.date FROM raw.pending_work AS p
WHERE (p.channel_id, p.date, p.source_ref) > (:after_channel_id, :after_date, :after_ref)
  AND (CAST(:source_id AS TEXT) IS NULL OR p.source_id = :source_id)
  AND (CAST(:channel_id AS BIGINT) IS NULL OR p.channel_id = :channel_id)
ORDER BY p.channel_id, p.date, p.source_ref
LIMIT :limit;
