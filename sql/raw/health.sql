-- name: health_raw
-- Liveness of the raw store: proves the schema and its main table answer, reading at most one row.
-- Served by: raw_messages (a one-row scan).
SELECT COUNT(*) AS n FROM (SELECT 1 AS one FROM raw.raw_messages LIMIT 1) AS probe;
