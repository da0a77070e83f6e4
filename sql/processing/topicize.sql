-- name: topics_document_channels
-- Channels that have processed documents (what `topicize` visits without --channel), with how many
-- documents and the newest processing time (to skip channels that have not changed).
-- Served by: processed_documents_channel_date_idx (index-only scan on channel_id).
SELECT channel_id, COUNT(*) AS documents, MAX(processed_at) AS newest_processed_at
FROM processing.processed_documents
GROUP BY channel_id
ORDER BY channel_id;

-- name: topics_corpus
-- The documents of one channel as topicization sees them, in message order, with the engagement
-- counters of their raw message (the extractive strategy ranks anchors by them). Streamed.
-- Served by: processed_documents_channel_date_idx for the scan and order, raw_messages primary key for the join.
SELECT d.source_ref, d.summary, d.text_clean, d.topics, d.language, d.processed_at, r.views, r.forwards
FROM processing.processed_documents AS d
LEFT JOIN raw.raw_messages AS r ON r.source_ref = d.source_ref
WHERE d.channel_id = :channel_id
ORDER BY d.message_date, d.source_ref;

-- name: topics_channel_newest_card
-- When a channel's topics were last computed (their corpus timestamp), or NULL if it has none.
-- Served by: topic_cards_channel_idx.
SELECT MAX(updated_at) AS updated_at FROM processing.topic_cards WHERE channel_id = :channel_id;
