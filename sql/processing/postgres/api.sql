-- name: api_documents_page
-- A page of processed documents for the HTTP API, in (channel, message date, ref) order, starting after
-- the previous page's last row (keyset paging: no OFFSET, so a deep page costs what the first does).
-- Filters: channel, source (through the raw message), message date window [since, until) and topic (the
-- topic card's anchors). The store passes the lowest possible key for the first page and far-past /
-- far-future bounds for an open window. A dialect variant because the topic filter unnests JSON.
-- Served by: processed_documents_channel_date_idx (range scan from the key); raw_messages and
-- topic_cards primary keys for the source and topic filters.
-- example: after_channel=1500000001 after_date=2025-01-01 after_ref='' channel_id=1500000001 since=2025-01-01 until=2025-07-01 source_id=null topic_id=null limit=100
SELECT d.source_ref, d.id, d.channel_id, d.message_date, d.processed_at, d.text_clean, d.summary, d.topics,
       d.entities, d.language, d.model, d.prompt_id, d.pipeline_version, d.input_tokens, d.output_tokens
FROM processing.processed_documents AS d
WHERE (d.channel_id, d.message_date, d.source_ref) > (:after_channel, :after_date, :after_ref)
  AND (CAST(:channel_id AS BIGINT) IS NULL OR d.channel_id = :channel_id)
  AND d.message_date >= :since
  AND d.message_date < :until
  AND (CAST(:source_id AS TEXT) IS NULL OR EXISTS (
      SELECT 1 FROM raw.raw_messages AS m WHERE m.source_ref = d.source_ref AND m.source_id = :source_id))
  AND (CAST(:topic_id AS TEXT) IS NULL OR d.source_ref IN (SELECT a.value ->> 'source_ref' FROM processing.topic_cards AS t, jsonb_array_elements(t.anchors) AS a WHERE t.topic_id = :topic_id))
ORDER BY d.channel_id, d.message_date, d.source_ref
LIMIT :limit;
