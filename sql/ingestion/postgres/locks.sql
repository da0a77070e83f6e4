-- name: ingest_lock_try
-- Try to take the ingestion lock of one source without waiting (cron safety: one run per source across
-- processes and hosts). `:key` is a 64-bit hash of the source id computed by tg-parser. The lock is
-- session-level: it is held on one dedicated connection for the whole run and released by
-- ingest_lock_release, or by PostgreSQL when that connection ends (a crashed run never leaves it behind).
-- Served by: the lock manager (no table).
SELECT pg_try_advisory_lock(CAST(:key AS BIGINT)) AS acquired;

-- name: ingest_lock_release
-- Release the ingestion lock of one source, on the same connection that took it. Served by: the lock manager.
SELECT pg_advisory_unlock(CAST(:key AS BIGINT)) AS released;

-- name: ingest_lock_holder
-- Who holds a source's ingestion lock (for the "lock held" message): backend pid, client address and
-- application name. Served by: pg_locks joined to pg_stat_activity (small system views).
SELECT l.pid, a.client_addr::text AS client_addr, a.application_name, a.backend_start
FROM pg_locks AS l
LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'advisory'
  AND l.granted
  AND l.classid = CAST((CAST(:key AS BIGINT) >> 32) & 4294967295 AS oid)
  AND l.objid = CAST(CAST(:key AS BIGINT) & 4294967295 AS oid)
  AND l.objsubid = 1
LIMIT 1;
