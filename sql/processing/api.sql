-- name: api_topics_page
-- A page of topic cards for the HTTP API in topic id order, after the previous page's last id (keyset),
-- optionally of one channel (through the membership table). Served by: topic_cards primary key;
-- topic_channels primary key for the channel filter.
-- example: after_id='' channel_id=null limit=100
SELECT c.* FROM processing.topic_cards AS c
WHERE c.topic_id > :after_id
  AND (CAST(:channel_id AS BIGINT) IS NULL OR EXISTS (
      SELECT 1 FROM processing.topic_channels AS tc WHERE tc.topic_id = c.topic_id AND tc.channel_id = :channel_id))
ORDER BY c.topic_id
LIMIT :limit;

-- name: api_keys_insert
-- Store a new API key: its public id, name, scope and the SHA-256 of its secret (never the secret).
-- Served by: api_keys primary key and its unique name.
-- example: key_id=k_3f9a1c name=reader scope=read secret_hash=sha256:9b74c9897bac770f created_at=2025-06-01T12:00:00Z
INSERT INTO processing.api_keys (key_id, name, scope, secret_hash, created_at, revoked_at)
VALUES (:key_id, :name, :scope, :secret_hash, :created_at, NULL);

-- name: api_keys_get
-- The key a request presents, by its public id (the secret is checked by the caller, in constant time).
-- Served by: api_keys primary key.
-- example: key_id=k_3f9a1c
SELECT key_id, name, scope, secret_hash, created_at, revoked_at FROM processing.api_keys WHERE key_id = :key_id;

-- name: api_keys_get_by_name
-- One key by its name. Served by: the unique index on api_keys.name.
-- example: name=reader
SELECT key_id, name, scope, secret_hash, created_at, revoked_at FROM processing.api_keys WHERE name = :name;

-- name: api_keys_list
-- Every key, without its hash, oldest first. Served by: api_keys primary key (a small table).
SELECT key_id, name, scope, created_at, revoked_at FROM processing.api_keys ORDER BY created_at, name;

-- name: api_keys_revoke
-- Revoke a key by name (it stays listed, marked revoked). Served by: the unique index on api_keys.name.
-- example: now=2025-06-01T12:00:00Z name=reader
UPDATE processing.api_keys SET revoked_at = :now WHERE name = :name AND revoked_at IS NULL;

-- name: api_rate_hit
-- Reserve :n requests of a key in a route group's current window and return the window's count
-- including them: one statement, so every API process (and host) shares the same counter.
-- Served by: api_rate_windows primary key.
-- example: key_id=k_3f9a1c route_group=read window_start=29166720 n=1
INSERT INTO processing.api_rate_windows AS w (key_id, route_group, window_start, hits)
VALUES (:key_id, :route_group, :window_start, :n)
ON CONFLICT (key_id, route_group, window_start) DO UPDATE SET hits = w.hits + :n
RETURNING hits;

-- name: api_rate_prune
-- Drop rate-limit windows that ended before :before. Served by: a scan of api_rate_windows (it holds
-- the windows of the last minutes only).
-- example: before=29166700
DELETE FROM processing.api_rate_windows WHERE window_start < :before;
