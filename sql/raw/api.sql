-- name: api_messages_page
-- A page of raw messages for the HTTP API, in (channel, date, ref) order, starting after the previous
-- page's last row (keyset paging: no OFFSET, so a deep page costs what the first does). The store passes
-- the lowest possible key for the first page and far-past/far-future bounds for an open date window, so
-- every parameter has a value. raw_payload is left out (up to 256 KiB a row).
-- Served by: raw_messages_channel_date_idx (range scan from the key).
SELECT source_ref, source_id, channel_id, message_id, message_type, date, edit_date, text, thread_id,
       parent_message_id, grouped_id, views, forwards, replies, media_type, media
FROM raw.raw_messages
WHERE (channel_id, date, source_ref) > (:after_channel, :after_date, :after_ref)
  AND (CAST(:channel_id AS BIGINT) IS NULL OR channel_id = :channel_id)
  AND (CAST(:source_id AS TEXT) IS NULL OR source_id = :source_id)
  AND date >= :since
  AND date < :until
ORDER BY channel_id, date, source_ref
LIMIT :limit;
