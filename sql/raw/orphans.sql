-- Orphan checks of the raw store; see sql/processing/orphans.sql for the shape every check shares.

-- name: orphans_raw_without_source
-- Raw messages whose source was removed (`tg-parser sources remove` keeps the messages on purpose): a
-- report, not an error. Served by: raw_messages primary key (the page), sources primary key (one probe
-- per row).
-- example: after='' batch=1000
WITH page AS (
    SELECT m.source_ref AS k,
           CASE WHEN m.source_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM ingestion.sources s WHERE s.source_id = m.source_id) THEN 1 ELSE 0 END AS orphan
    FROM raw.raw_messages m
    WHERE m.source_ref > :after ORDER BY m.source_ref LIMIT :batch
)
SELECT max(k) AS last_key, count(*) AS scanned, coalesce(sum(orphan), 0) AS orphans,
       min(CASE WHEN orphan = 1 THEN k END) AS example
FROM page;
