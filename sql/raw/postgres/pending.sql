-- name: pending_claim
-- The next page of queued messages for one worker's claim, as pending_candidates (same filters, order and
-- columns; an empty page means the queue is done) but for `done`, which flags permanent failures only:
-- whether a message has a document is looked up once, by processing_unclaim_done, which the claim runs
-- in the same transaction after leasing the page (with a later snapshot; the refs it gives back are the
-- page's done messages too). The page's queue rows are locked FOR
-- UPDATE SKIP LOCKED until the claim transaction commits its leases: concurrent workers never wait for
-- each other here and never get the same row; each takes the lowest rows nobody else holds. (The lease insert still
-- decides: a row passed over by a snapshot taken before another worker's commit is refused by
-- processing_claim_leases.) The page is taken in index order before anything is joined, so the plan is
-- an index walk of the queue whatever the planner guesses of the checks.
-- Served by: pending_work_channel_date_idx for the order and the keyset bound; the primary keys of
-- work_leases, raw_messages, raw_message_counters and processing_failures.
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
    FOR UPDATE SKIP LOCKED
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
-- filters, order, columns and `done` flag as pending_claim; messages with a document are left out of
-- the page itself, so they cannot fill it; the queue rows are locked FOR UPDATE SKIP LOCKED as there.
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
    FOR UPDATE OF p SKIP LOCKED
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

-- name: pending_enqueue
-- Queue newly stored messages (a JSON array of source_refs), in the transaction that inserted them into
-- raw_messages (RawStore.store_rows), one statement per batch. A ref already queued is left alone.
-- Served by: raw_messages primary key, pending_work primary key.
-- example: refs='["tg:1500000001:post:1000","tg:1500000001:post:1001"]'
INSERT INTO raw.pending_work (source_ref, channel_id, date, source_id)
SELECT r.source_ref, r.channel_id, r.date, r.source_id
FROM raw.raw_messages AS r
WHERE r.source_ref IN (SELECT jsonb_array_elements_text(:refs))
ON CONFLICT (source_ref) DO NOTHING;

-- name: pending_dequeue
-- Take messages whose document or permanent failure is written (a JSON array of refs) out of the queue;
-- the process coordinator runs it right after the transaction that wrote them. `= ANY (ARRAY(...))`,
-- not `IN (SELECT ...)`: PostgreSQL hashed the list and read the whole queue (query-plan gate).
-- Served by: pending_work primary key.
-- example: refs='["tg:1500000001:post:1000","tg:1500000001:post:1001"]'
DELETE FROM raw.pending_work WHERE source_ref = ANY (ARRAY(SELECT jsonb_array_elements_text(:refs)));
