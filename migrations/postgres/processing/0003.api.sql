-- depends: 0002.topic_channel_state
-- compatibility: additive (new tables older code neither reads nor needs to fill)
-- The HTTP API: keys (only a hash of each secret is stored), per-key rate-limit windows shared by every
-- API process, and the durable run queue that `tg-parser worker` (and `serve --execute-runs`) drains.

CREATE TABLE api_keys (
    key_id      text PRIMARY KEY,          -- the public part of a key (tgp_<key_id>_<secret>)
    name        text NOT NULL UNIQUE,
    scope       text NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    secret_hash text NOT NULL,             -- SHA-256 of the secret, hex; compared in constant time
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);

-- One row per key, route group and window: a counter bumped by one upsert per request. UNLOGGED: a
-- crash loses at most the current window's counts, and no request pays for WAL.
CREATE UNLOGGED TABLE api_rate_windows (
    key_id       text NOT NULL,
    route_group  text NOT NULL,
    window_start bigint NOT NULL,          -- unix seconds of the window's start
    hits         integer NOT NULL,
    PRIMARY KEY (key_id, route_group, window_start)
);

CREATE TABLE run_requests (
    run_id           text PRIMARY KEY,
    steps            jsonb NOT NULL,
    source_id        text,
    options          jsonb NOT NULL,
    requested_by     text,
    webhook_url      text,
    status           text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    progress         jsonb NOT NULL,
    counts           jsonb NOT NULL,
    error            text,
    created_at       timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz,
    worker_id        text,
    lease_expires_at timestamptz,
    webhook_status   text CHECK (webhook_status IN ('pending', 'delivered', 'failed')),
    webhook_attempts integer NOT NULL DEFAULT 0,
    webhook_error    text
);

-- The queue: the oldest queued run first; running runs by lease expiry (to fail a dead worker's run).
CREATE INDEX run_requests_status_idx ON run_requests (status, created_at, run_id);
-- Listing newest first (keyset on created_at, run_id).
CREATE INDEX run_requests_created_idx ON run_requests (created_at, run_id);
