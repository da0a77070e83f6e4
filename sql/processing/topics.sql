-- name: topics_delete_channel
-- Remove every topic card of a channel; membership rows and bundles go by cascade. Used inside the
-- transaction that writes the channel's new topics, so stale topics never linger.
-- Served by: topic_cards_channel_idx.
-- example: channel_id=1500000001
DELETE FROM processing.topic_cards WHERE channel_id = :channel_id;

-- name: topics_insert_card
-- Write one topic card. Served by: topic_cards primary key.
-- example: topic_id=t_1500000001_0001 channel_id=1500000001 title='TON' summary='What the channel says about TON' kind=cluster anchors='["tg:1500000001:post:1000"]' tags='["news"]' model=gpt-4o-mini prompt_id=extract-v1 created_at=2025-06-01T12:00:00Z updated_at=2025-06-01T12:00:00Z metadata='{}'
INSERT INTO processing.topic_cards (
    topic_id, channel_id, title, summary, kind, anchors, tags, model, prompt_id, created_at, updated_at, metadata
) VALUES (
    :topic_id, :channel_id, :title, :summary, :kind, :anchors, :tags, :model, :prompt_id, :created_at,
    :updated_at, :metadata
);

-- name: topics_insert_channel
-- Record that a topic belongs to a channel (membership, instead of searching JSON).
-- Served by: topic_channels primary key.
-- example: topic_id=t_1500000001_0001 channel_id=1500000001
INSERT INTO processing.topic_channels (topic_id, channel_id) VALUES (:topic_id, :channel_id)
ON CONFLICT (topic_id, channel_id) DO NOTHING;

-- name: topics_upsert_bundle
-- Write the supporting items of a topic. Served by: topic_bundles primary key.
-- example: topic_id=t_1500000001_0001 channel_id=1500000001 items='[]' updated_at=2025-06-01T12:00:00Z
INSERT INTO processing.topic_bundles (topic_id, channel_id, items, updated_at)
VALUES (:topic_id, :channel_id, :items, :updated_at)
ON CONFLICT (topic_id) DO UPDATE SET
    channel_id = excluded.channel_id,
    items = excluded.items,
    updated_at = excluded.updated_at;

-- name: topics_list_by_channel
-- Topic cards of one channel through the membership table, in id order. Served by: topic_channels_channel_idx.
-- example: channel_id=1500000001
SELECT c.* FROM processing.topic_channels AS tc
JOIN processing.topic_cards AS c ON c.topic_id = tc.topic_id
WHERE tc.channel_id = :channel_id
ORDER BY c.topic_id;

-- name: topics_list_all
-- Every topic card, in id order. Served by: topic_cards primary key.
SELECT * FROM processing.topic_cards ORDER BY topic_id;

-- name: topics_get_card
-- One topic card. Served by: topic_cards primary key.
-- example: topic_id=t_1500000001_0001
SELECT * FROM processing.topic_cards WHERE topic_id = :topic_id;

-- name: topics_get_bundle
-- The bundle of one topic. Served by: topic_bundles primary key.
-- example: topic_id=t_1500000001_0001
SELECT * FROM processing.topic_bundles WHERE topic_id = :topic_id;
