-- name: api_messages_page
-- A page of raw messages for the HTTP API, in (channel, date, ref) order, starting after the previous
-- page's last row (keyset paging: no OFFSET, so a deep page costs what the first does). The store passes
-- the lowest possible key for the first page and far-past/far-future bounds for an open date window, so
-- every parameter has a value. raw_payload is left out (up to 256 KiB a row).
-- Counters: the latest refresh (raw_message_counters), else the snapshot's.
-- Served by: raw_messages_channel_date_idx (range scan from the key), raw_message_counters primary key.
-- example: after_channel=1500000001 after_date=2025-01-01 after_ref='' channel_id=1500000001 source_id=null since=2025-01-01 until=2025-07-01 limit=100
SELECT r.source_ref, r.source_id, r.channel_id, r.message_id, r.message_type, r.date, r.edit_date, r.text,
       r.thread_id, r.parent_message_id, r.grouped_id, COALESCE(c.views, r.views) AS views,
       COALESCE(c.forwards, r.forwards) AS forwards, COALESCE(c.replies, r.replies) AS replies,
       r.media_type, r.media
FROM raw.raw_messages AS r
LEFT JOIN raw.raw_message_counters AS c ON c.source_ref = r.source_ref
WHERE (r.channel_id, r.date, r.source_ref) > (:after_channel, :after_date, :after_ref)
  AND (CAST(:channel_id AS BIGINT) IS NULL OR r.channel_id = :channel_id)
  AND (CAST(:source_id AS TEXT) IS NULL OR r.source_id = :source_id)
  AND r.date >= :since
  AND r.date < :until
ORDER BY r.channel_id, r.date, r.source_ref
LIMIT :limit;
