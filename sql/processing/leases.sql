-- name: processing_list_leases
-- Live and expired leases, for diagnostics. Served by: work_leases_expires_idx.
SELECT * FROM processing.work_leases ORDER BY expires_at, source_ref;

-- name: processing_purge_expired_leases
-- Drop leases that lapsed (a crashed worker's). Served by: work_leases_expires_idx.
DELETE FROM processing.work_leases WHERE expires_at < :now;
