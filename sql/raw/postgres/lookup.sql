-- name: raw_latest_observations
-- For a batch of source_refs (a JSON array), what is stored now: the snapshot and the newest journaled
-- version (and the stored counters), so the caller can tell new messages, unchanged ones and edits
-- apart, and skip counter updates that change nothing, in one round trip.
-- Served by: raw_messages, raw_message_counters primary keys and raw_message_versions_ref_idx.
-- example: refs='["tg:1500000001:post:1000","tg:1500000001:post:1001"]'
SELECT m.source_ref,
       m.text AS snapshot_text,
       m.edit_date AS snapshot_edit_date,
       COALESCE(c.views, m.views) AS views, COALESCE(c.forwards, m.forwards) AS forwards,
       COALESCE(c.replies, m.replies) AS replies,
       v.id AS version_id,
       v.text AS version_text,
       v.edit_date AS version_edit_date
FROM raw.raw_messages AS m
LEFT JOIN raw.raw_message_counters AS c ON c.source_ref = m.source_ref
LEFT JOIN LATERAL (
    SELECT v2.id, v2.text, v2.edit_date
    FROM raw.raw_message_versions AS v2
    WHERE v2.source_ref = m.source_ref
    ORDER BY v2.id DESC
    LIMIT 1
) AS v ON true
WHERE m.source_ref IN (SELECT jsonb_array_elements_text(:refs));
