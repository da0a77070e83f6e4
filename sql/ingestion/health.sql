-- name: health_ingestion
-- Liveness of the ingestion store: proves the schema and its main table answer, reading at most one row.
-- Served by: sources (a one-row scan).
SELECT COUNT(*) AS n FROM (SELECT 1 AS one FROM ingestion.sources LIMIT 1) AS probe;
