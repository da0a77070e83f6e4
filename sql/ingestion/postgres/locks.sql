-- name: session_lock_try
-- Try to take a named lock without waiting (Database.hold_lock; e.g. cron safety: one ingestion per source
-- across processes and hosts). `:key` is a 64-bit hash of the lock name (tg_parser/db/locks.py). The lock
-- is session-level: it is held on one dedicated connection for the whole block and released by
-- session_lock_release, or by PostgreSQL when that connection ends (a crashed run never leaves it behind).
-- Served by: the lock manager (no table).
-- example: key=7264019384
SELECT pg_try_advisory_lock(CAST(:key AS BIGINT)) AS acquired;

-- name: session_lock_release
-- Release a named lock, on the same connection that took it. Served by: the lock manager.
-- example: key=7264019384
SELECT pg_advisory_unlock(CAST(:key AS BIGINT)) AS released;

-- name: session_lock_holder
-- Who holds a named lock (for the "lock held" message): backend pid, client address and
-- application name. Served by: pg_locks joined to pg_stat_activity (small system views).
-- example: key=7264019384
SELECT l.pid, a.client_addr::text AS client_addr, a.application_name, a.backend_start
FROM pg_locks AS l
LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE l.locktype = 'advisory'
  AND l.granted
  AND l.classid = CAST((CAST(:key AS BIGINT) >> 32) & 4294967295 AS oid)
  AND l.objid = CAST(CAST(:key AS BIGINT) & 4294967295 AS oid)
  AND l.objsubid = 1
LIMIT 1;

-- name: lock_table_try
-- Take a named lock in the lock table (DB_POOL_MODE=transaction, where no session state survives a
-- transaction): insert the row, or take over one whose holder let it expire (crashed). Returns the row
-- only when this owner now holds the lock. Served by: named_locks primary key.
-- example: name=ingest:durov owner=worker-1 host=host-1 pid=4242 ttl=60
INSERT INTO ingestion.named_locks AS l (name, owner, host, pid, acquired_at, expires_at)
VALUES (:name, :owner, :host, :pid, now(), now() + make_interval(secs => :ttl))
ON CONFLICT (name) DO UPDATE SET
    owner = excluded.owner,
    host = excluded.host,
    pid = excluded.pid,
    acquired_at = excluded.acquired_at,
    expires_at = excluded.expires_at
WHERE l.expires_at < now()
RETURNING l.owner;

-- name: lock_table_renew
-- Push a held lock's expiry forward (the holder's heartbeat); no row means the lock was lost.
-- Served by: named_locks primary key.
-- example: ttl=60 name=ingest:durov owner=worker-1
UPDATE ingestion.named_locks SET expires_at = now() + make_interval(secs => :ttl)
WHERE name = :name AND owner = :owner;

-- name: lock_table_release
-- Release a lock this owner holds. Served by: named_locks primary key.
-- example: name=ingest:durov owner=worker-1
DELETE FROM ingestion.named_locks WHERE name = :name AND owner = :owner;

-- name: lock_table_holder
-- Who holds a named lock in the lock table (for the "lock held" message). Served by: named_locks primary key.
-- example: name=ingest:durov
SELECT host, pid, acquired_at, expires_at FROM ingestion.named_locks WHERE name = :name AND expires_at >= now();
