-- Orphan checks of the ingestion store; see sql/processing/orphans.sql for the shape every check shares.

-- name: orphans_ingest_runs_without_source
-- Ingestion attempts of a source that was removed (kept as history): a report, not an error. Keys are the
-- attempts' ids, so :after starts at 0. Served by: ingest_runs primary key (the page), sources primary
-- key (one probe per row).
-- example: after=0 batch=1000
WITH page AS (
    SELECT i.id AS k,
           CASE WHEN NOT EXISTS (SELECT 1 FROM ingestion.sources s WHERE s.source_id = i.source_id) THEN 1 ELSE 0 END AS orphan
    FROM ingestion.ingest_runs i
    WHERE i.id > :after ORDER BY i.id LIMIT :batch
)
SELECT max(k) AS last_key, count(*) AS scanned, coalesce(sum(orphan), 0) AS orphans,
       min(CASE WHEN orphan = 1 THEN k END) AS example
FROM page;
