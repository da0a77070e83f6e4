-- name: prune_versions_bound
-- `db prune`: the first journaled version observed at or after :cutoff, in id order: versions are
-- appended with observed_at = now, so ids follow observed_at and every version a prune may delete has
-- a smaller id. NULL when every version is older. Served by: raw_message_versions primary key (a walk
-- from the oldest id that stops at the first version inside the window: the rows a prune reads).
-- example: cutoff=2025-03-01
-- plan: seqscan-ok SQLite shows the walk in id order (its INTEGER PRIMARY KEY, the rowid) as a SCAN; it stops at the first row inside the window (LIMIT 1)
SELECT MIN(v.id) AS id FROM (
    SELECT id FROM raw.raw_message_versions
    WHERE observed_at >= :cutoff
    ORDER BY id
    LIMIT 1
) AS v;

-- name: prune_versions
-- `db prune`: delete one batch of journaled versions below :below_id (prune_versions_bound) and after
-- :after_id (the previous batch's last), observed before :cutoff, that are not among the :keep newest
-- versions of their message (the newest is what the next observation is compared with, so :keep is at
-- least 1). Returns the ids deleted: the next batch starts after the largest, so a version kept is
-- read once per prune, not once per batch.
-- Served by: raw_message_versions primary key (the id range) and raw_message_versions_ref_idx (at most
-- :keep newer versions of the same message counted, an index-only probe).
-- example: after_id=0 below_id=100000 cutoff=2025-03-01 keep=5 batch=1000
DELETE FROM raw.raw_message_versions
WHERE id IN (
    SELECT v.id FROM raw.raw_message_versions AS v
    WHERE v.id > :after_id
      AND v.id < :below_id
      AND v.observed_at < :cutoff
      AND (
          SELECT COUNT(*) FROM (
              SELECT 1 AS one FROM raw.raw_message_versions AS n
              WHERE n.source_ref = v.source_ref AND n.id > v.id
              LIMIT :keep
          ) AS newer
      ) >= :keep
    ORDER BY v.id
    LIMIT :batch
)
RETURNING id;

-- name: prune_count_versions
-- `db prune --dry-run`: how many versions prune_versions would delete (same conditions, all batches).
-- Served by: as prune_versions.
-- example: below_id=100000 cutoff=2025-03-01 keep=5
SELECT COUNT(*) AS n FROM raw.raw_message_versions AS v
WHERE v.id < :below_id
  AND v.observed_at < :cutoff
  AND (
      SELECT COUNT(*) FROM (
          SELECT 1 AS one FROM raw.raw_message_versions AS n
          WHERE n.source_ref = v.source_ref AND n.id > v.id
          LIMIT :keep
      ) AS newer
  ) >= :keep;
