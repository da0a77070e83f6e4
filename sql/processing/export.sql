-- name: export_channel_usernames
-- Public usernames of the channels we know, for t.me links (private channels have none).
-- Served by: a sequential scan of sources (one row per channel).
SELECT channel_id, username FROM ingestion.sources
WHERE channel_id IS NOT NULL AND username IS NOT NULL
ORDER BY channel_id, source_id;

-- name: export_topic_bundles
-- Every topic bundle (supporting items), for resolving topic membership during export.
-- Served by: topic_bundles primary key (full scan; one row per topic).
SELECT * FROM processing.topic_bundles ORDER BY topic_id;
