-- Orphan checks for the references between stores that are deliberately not foreign keys (the stores are
-- separate SQLite files, and each store can be rolled back, pruned or rebuilt on its own). Each query reads
-- one keyset page of the referencing table (keys > :after, :batch of them) and returns one row: the page's
-- last key (NULL when the table is exhausted), how many rows it read, how many of them are orphans and the
-- first orphan's key. `tg-parser db check-orphans` runs them page after page, each page its own short
-- statement. Portable: the same text runs on both dialects (the stores are attached on SQLite). The probe
-- sits inside the LIMITed page so it runs once per row of the page: written as a join, PostgreSQL may plan
-- a hash join that scans the whole referenced table for every page (seen at 400k rows: 760 ms a page).

-- name: orphans_documents_without_raw
-- Processed documents whose raw message is gone (deleted or pruned from raw, or the raw store restored
-- from an older backup). Served by: processed_documents primary key (the page), raw_messages primary key
-- (one probe per row).
-- example: after='' batch=1000
WITH page AS (
    SELECT d.source_ref AS k,
           CASE WHEN NOT EXISTS (SELECT 1 FROM raw.raw_messages r WHERE r.source_ref = d.source_ref) THEN 1 ELSE 0 END AS orphan
    FROM processing.processed_documents d
    WHERE d.source_ref > :after ORDER BY d.source_ref LIMIT :batch
)
SELECT max(k) AS last_key, count(*) AS scanned, coalesce(sum(orphan), 0) AS orphans,
       min(CASE WHEN orphan = 1 THEN k END) AS example
FROM page;

-- name: orphans_failures_without_raw
-- Processing failures recorded for a raw message that no longer exists. Served by:
-- processing_failures primary key (the page), raw_messages primary key (one probe per row).
-- example: after='' batch=1000
WITH page AS (
    SELECT f.source_ref AS k,
           CASE WHEN NOT EXISTS (SELECT 1 FROM raw.raw_messages r WHERE r.source_ref = f.source_ref) THEN 1 ELSE 0 END AS orphan
    FROM processing.processing_failures f
    WHERE f.source_ref > :after ORDER BY f.source_ref LIMIT :batch
)
SELECT max(k) AS last_key, count(*) AS scanned, coalesce(sum(orphan), 0) AS orphans,
       min(CASE WHEN orphan = 1 THEN k END) AS example
FROM page;

-- name: orphans_leases_without_raw
-- Work leases on a raw message that no longer exists (harmless: a lease lapses on its own). Served by:
-- work_leases primary key (the page), raw_messages primary key (one probe per row).
-- example: after='' batch=1000
WITH page AS (
    SELECT l.source_ref AS k,
           CASE WHEN NOT EXISTS (SELECT 1 FROM raw.raw_messages r WHERE r.source_ref = l.source_ref) THEN 1 ELSE 0 END AS orphan
    FROM processing.work_leases l
    WHERE l.source_ref > :after ORDER BY l.source_ref LIMIT :batch
)
SELECT max(k) AS last_key, count(*) AS scanned, coalesce(sum(orphan), 0) AS orphans,
       min(CASE WHEN orphan = 1 THEN k END) AS example
FROM page;

-- name: orphans_topics_without_documents
-- Topic cards of a channel that has no processed document any more (the next `tg-parser topicize`
-- removes them). Served by: topic_cards primary key (the page), processed_documents_channel_date_idx
-- (one probe per row).
-- example: after='' batch=1000
WITH page AS (
    SELECT t.topic_id AS k,
           CASE WHEN NOT EXISTS (SELECT 1 FROM processing.processed_documents d WHERE d.channel_id = t.channel_id) THEN 1 ELSE 0 END AS orphan
    FROM processing.topic_cards t
    WHERE t.topic_id > :after ORDER BY t.topic_id LIMIT :batch
)
SELECT max(k) AS last_key, count(*) AS scanned, coalesce(sum(orphan), 0) AS orphans,
       min(CASE WHEN orphan = 1 THEN k END) AS example
FROM page;
