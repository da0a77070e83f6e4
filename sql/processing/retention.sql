-- name: prune_runs
-- `db prune`: delete one batch of run reports started before :cutoff (any status: a report still
-- `running` that old belongs to a process long gone). Returns how many went; the caller repeats until
-- a batch comes back short, each batch in its own short transaction.
-- Served by: runs_started_idx (BRIN on PostgreSQL: reports are appended in started_at order, so the old
-- block ranges are found from a few index pages; a B-tree on SQLite), then the primary key. Measured on
-- 300,000 reports with 7,200 past the cutoff: 5 index pages and ~200 heap pages per batch, 38 ms. When
-- most reports are past the cutoff (a first prune) PostgreSQL reads the table's head instead, where
-- the oldest reports are: a batch is found at once either way.
-- example: cutoff=2025-03-01 batch=1000
DELETE FROM processing.runs
WHERE run_id IN (
    SELECT r.run_id FROM processing.runs AS r
    WHERE r.started_at < :cutoff
    LIMIT :batch
)
  AND started_at < :cutoff;

-- name: prune_count_runs
-- `db prune --dry-run`: how many run reports prune_runs would delete. Served by: runs_started_idx.
-- example: cutoff=2025-03-01
SELECT COUNT(*) AS n FROM processing.runs WHERE started_at < :cutoff;

-- name: prune_run_requests
-- `db prune`: delete one batch of queued runs that finished (succeeded or failed) before :cutoff; queued
-- and running ones are never touched. The outer conditions are checked again on the row deleted, so a
-- row that changed meanwhile is left alone.
-- Served by: run_requests_status_idx (a range per finished status, on created_at: a run finishes after
-- it was created, so finished_at < :cutoff implies created_at < :cutoff), then the primary key.
-- example: cutoff=2025-03-01 batch=1000
DELETE FROM processing.run_requests
WHERE run_id IN (
    SELECT q.run_id FROM processing.run_requests AS q
    WHERE q.status IN ('succeeded', 'failed')
      AND q.created_at < :cutoff
      AND q.finished_at < :cutoff
    LIMIT :batch
)
  AND status IN ('succeeded', 'failed')
  AND finished_at < :cutoff;

-- name: prune_count_run_requests
-- `db prune --dry-run`: how many finished queued runs prune_run_requests would delete.
-- Served by: run_requests_status_idx.
-- example: cutoff=2025-03-01
SELECT COUNT(*) AS n FROM processing.run_requests
WHERE status IN ('succeeded', 'failed') AND created_at < :cutoff AND finished_at < :cutoff;

-- name: prune_expired_leases
-- `db prune`: delete one batch of work leases that expired before :now (a crashed worker's; any
-- worker may take such a lease over anyway, so deleting it changes no claim). The outer condition is
-- checked again on the row deleted: a lease taken over meanwhile (a new expires_at) stays.
-- Served by: a sequential scan of work_leases (it holds only the leases in flight; an index on
-- expires_at would make every lease renewal a non-HOT update), then the primary key.
-- example: now=2025-06-01T12:00:00Z batch=1000
DELETE FROM processing.work_leases
WHERE source_ref IN (
    SELECT l.source_ref FROM processing.work_leases AS l
    WHERE l.expires_at < :now
    LIMIT :batch
)
  AND expires_at < :now;

-- name: prune_count_expired_leases
-- `db prune --dry-run`: how many expired leases prune_expired_leases would delete.
-- Served by: a sequential scan of work_leases (see prune_expired_leases).
-- example: now=2025-06-01T12:00:00Z
SELECT COUNT(*) AS n FROM processing.work_leases WHERE expires_at < :now;

-- name: prune_last_run
-- When the last prune started (the automatic step in `run`/`worker` runs at most every
-- PRUNE_AUTO_HOURS, counted from this, across every process and host). Served by: runs_kind_started_idx.
SELECT MAX(started_at) AS started_at FROM processing.runs WHERE kind = 'prune';
