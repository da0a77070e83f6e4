-- name: topics_lock_channel
-- Serialise writers of one channel's topics until the end of the transaction (two hosts topicizing
-- the same channel at once would otherwise both delete-then-insert and collide on the primary key).
-- Served by: no table; a transaction-scoped advisory lock keyed on the channel.
-- example: channel_id=1500000001
SELECT pg_advisory_xact_lock(hashtextextended('tg-parser:topics:' || CAST(:channel_id AS TEXT), 0)) IS NULL AS waited;
