-- name: topics_lock_channel
-- Serialise writers of one channel's topics. On SQLite the write transaction (BEGIN IMMEDIATE) already
-- holds the database's write lock, so there is nothing more to take.
-- Served by: no table.
-- example: channel_id=1500000001
SELECT CAST(:channel_id AS INTEGER) IS NULL AS waited;
