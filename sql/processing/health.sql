-- name: health_processing
-- Liveness of the processing store: proves the schema and its main table answer, reading at most one row.
-- Served by: processed_documents (a one-row scan).
SELECT COUNT(*) AS n FROM (SELECT 1 AS one FROM processing.processed_documents LIMIT 1) AS probe;
