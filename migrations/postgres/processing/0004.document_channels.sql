-- depends: 0003.api
-- compatibility: additive (an index)
-- Topicize's channel catalogue (topics_document_channels, once per run) and its per-channel freshness
-- check (topics_document_channel): the documents and newest processing time of each channel, read
-- from this index alone (an index-only scan) instead of a scan of processed_documents per channel.

CREATE INDEX processed_documents_channel_processed_idx ON processed_documents (channel_id, processed_at);
