-- name: session_lock_try
-- On SQLite a named lock (Database.hold_lock) is an exclusive file lock (flock) on
-- <DB_SQLITE_DIR>/locks/<name>-<hash>.lock, taken by tg-parser itself (tg_parser/db/locks.py); this
-- statement only exists so the name is defined for both dialects and always answers true. Served by: nothing (no table).
SELECT 1 AS acquired;

-- name: session_lock_release
-- SQLite counterpart of the PostgreSQL advisory unlock: the file lock is released by closing the file.
-- Served by: nothing (no table).
SELECT 1 AS released;

-- name: session_lock_holder
-- SQLite counterpart of the PostgreSQL lock-holder lookup: the lock file itself records pid, host and
-- start time. Served by: nothing (no table).
SELECT NULL AS pid, NULL AS client_addr, NULL AS application_name, NULL AS backend_start;

-- name: lock_table_try
-- SQLite counterpart of the PostgreSQL lock-table try (DB_POOL_MODE=transaction is PostgreSQL only):
-- defined so the name exists for both dialects; SQLite locks with flock. Served by: nothing (no table).
SELECT NULL AS owner WHERE 0;

-- name: lock_table_renew
-- SQLite counterpart of the lock-table heartbeat (unused: SQLite locks with flock). Served by: nothing.
SELECT 1 AS renewed WHERE 0;

-- name: lock_table_release
-- SQLite counterpart of the lock-table release (unused: SQLite locks with flock). Served by: nothing.
SELECT 1 AS released WHERE 0;

-- name: lock_table_holder
-- SQLite counterpart of the lock-table holder lookup (unused: the lock file records the holder).
-- Served by: nothing (no table).
SELECT NULL AS host, NULL AS pid, NULL AS acquired_at, NULL AS expires_at WHERE 0;
