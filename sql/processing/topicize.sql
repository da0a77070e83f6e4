-- name: topics_document_channels
-- Channels that have processed documents (what `topicize` visits without --channel), with how many
-- documents and the newest processing time (to skip channels that have not changed). Asked once per
-- run (the runner hands each channel its row). Served by: processed_documents_channel_processed_idx
-- (an index-only scan: channel_id and processed_at are both in it, no heap row is read).
SELECT channel_id, COUNT(*) AS documents, MAX(processed_at) AS newest_processed_at
FROM processing.processed_documents
GROUP BY channel_id
ORDER BY channel_id;

-- name: topics_document_channel
-- One channel's row of topics_document_channels (how many documents, the newest processing time), or no
-- row: `topicize --channel` asks it per channel named. Served by: processed_documents_channel_processed_idx
-- (an index-only range scan of the channel).
-- example: channel_id=1500000001
SELECT channel_id, COUNT(*) AS documents, MAX(processed_at) AS newest_processed_at
FROM processing.processed_documents
WHERE channel_id = :channel_id
GROUP BY channel_id;

-- name: topics_corpus
-- The documents of one channel as topicization sees them, in message order, with the engagement
-- counters of their raw message (the extractive strategy ranks anchors by them). Read in keyset
-- batches (Database.keyset_batches), each its own short statement, so no transaction stays open while
-- the strategy calls the LLM between batches: the next batch starts after the last row's
-- (message_date, source_ref).
-- Served by: processed_documents_channel_date_idx for the scan and order, raw_messages and
-- raw_message_counters primary keys for the joins.
-- example: channel_id=1500000001 after_date=0001-01-01 after_ref='' batch_size=2000
SELECT d.source_ref, d.summary, d.text_clean, d.topics, d.language, d.processed_at,
       COALESCE(c.views, r.views) AS views, COALESCE(c.forwards, r.forwards) AS forwards, d.message_date
FROM processing.processed_documents AS d
LEFT JOIN raw.raw_messages AS r ON r.source_ref = d.source_ref
LEFT JOIN raw.raw_message_counters AS c ON c.source_ref = r.source_ref
WHERE d.channel_id = :channel_id
  AND (d.message_date, d.source_ref) > (:after_date, :after_ref)
ORDER BY d.message_date, d.source_ref
LIMIT :batch_size;

-- name: topics_channel_state
-- How a channel's topics were last computed (corpus timestamp, strategy, model, prompt), or no row.
-- Served by: topic_channel_state primary key.
-- example: channel_id=1500000001
SELECT * FROM processing.topic_channel_state WHERE channel_id = :channel_id;

-- name: topics_save_channel_state
-- Record a finished topicization of a channel (in the transaction that writes its topics).
-- Served by: topic_channel_state primary key.
-- example: channel_id=1500000001 corpus_as_of=2025-06-01T12:00:00Z computed_at=2025-06-01T12:00:00Z strategy=llm model=gpt-4o-mini prompt_id=extract-v1
INSERT INTO processing.topic_channel_state AS s (channel_id, corpus_as_of, computed_at, strategy, model, prompt_id)
VALUES (:channel_id, :corpus_as_of, :computed_at, :strategy, :model, :prompt_id)
ON CONFLICT (channel_id) DO UPDATE SET
    corpus_as_of = excluded.corpus_as_of,
    computed_at = excluded.computed_at,
    strategy = excluded.strategy,
    model = excluded.model,
    prompt_id = excluded.prompt_id;
