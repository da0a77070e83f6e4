-- name: topics_delete_channel
-- Remove every topic card of a channel; membership rows and bundles go by cascade. Used inside the
-- transaction that writes the channel's new topics, so stale topics never linger.
-- Served by: topic_cards_channel_idx.
DELETE FROM processing.topic_cards WHERE channel_id = :channel_id;

-- name: topics_insert_card
-- Write one topic card. Served by: topic_cards primary key.
INSERT INTO processing.topic_cards (
    topic_id, channel_id, title, summary, kind, anchors, tags, model, prompt_id, created_at, updated_at, metadata
) VALUES (
    :topic_id, :channel_id, :title, :summary, :kind, :anchors, :tags, :model, :prompt_id, :created_at,
    :updated_at, :metadata
);

-- name: topics_insert_channel
-- Record that a topic belongs to a channel (membership, instead of searching JSON).
-- Served by: topic_channels primary key.
INSERT INTO processing.topic_channels (topic_id, channel_id) VALUES (:topic_id, :channel_id)
ON CONFLICT (topic_id, channel_id) DO NOTHING;

-- name: topics_upsert_bundle
-- Write the supporting items of a topic. Served by: topic_bundles primary key.
INSERT INTO processing.topic_bundles (topic_id, channel_id, items, updated_at)
VALUES (:topic_id, :channel_id, :items, :updated_at)
ON CONFLICT (topic_id) DO UPDATE SET
    channel_id = excluded.channel_id,
    items = excluded.items,
    updated_at = excluded.updated_at;

-- name: topics_list_by_channel
-- Topic cards of one channel through the membership table, in id order. Served by: topic_channels_channel_idx.
SELECT c.* FROM processing.topic_channels AS tc
JOIN processing.topic_cards AS c ON c.topic_id = tc.topic_id
WHERE tc.channel_id = :channel_id
ORDER BY c.topic_id;

-- name: topics_list_all
-- Every topic card, in id order. Served by: topic_cards primary key.
SELECT * FROM processing.topic_cards ORDER BY topic_id;

-- name: topics_get_card
-- One topic card. Served by: topic_cards primary key.
SELECT * FROM processing.topic_cards WHERE topic_id = :topic_id;

-- name: topics_get_bundle
-- The bundle of one topic. Served by: topic_bundles primary key.
SELECT * FROM processing.topic_bundles WHERE topic_id = :topic_id;
