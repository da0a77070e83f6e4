-- name: processing_list_leases
-- Live and expired leases, for diagnostics. Served by: a sequential scan and a sort (work_leases holds
-- the leases in flight, and `db prune` removes expired ones; an index on expires_at would make every
-- lease renewal a non-HOT update).
SELECT * FROM processing.work_leases ORDER BY expires_at, source_ref;

-- name: processing_purge_expired_leases
-- Drop leases that lapsed (a crashed worker's). Served by: a sequential scan of work_leases (see
-- processing_list_leases). `db prune` deletes in batches with prune_expired_leases instead.
-- example: now=2025-06-01T12:00:00Z
DELETE FROM processing.work_leases WHERE expires_at < :now;
