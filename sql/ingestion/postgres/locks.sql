-- name: session_lock_try
-- Try to take a named lock without waiting (Database.hold_lock; e.g. cron safety: one ingestion per source
-- across processes and hosts). `:key` is a 64-bit hash of the lock name (tg_parser/db/locks.py). The lock
-- is session-level: it is held on one dedicated connection for the whole block and released by
-- session_lock_release, or by PostgreSQL when that connection ends (a crashed run never leaves it behind).
-- Served by: the lock manager (no table).
SELECT pg_try_advisory_lock(CAST(:key AS BIGINT)) AS acquired;

-- name: session_lock_release
-- Release a named lock, on the same connection that took it. Served by: the lock manager.
SELECT pg_advisory_unlock(CAST(:key AS BIGINT)) AS released;

-- name: session_lock_holder
-- Who holds a named lock (for the "lock held" message): backend pid, client address and
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
