-- depends: 0002.topic_channel_state
-- compatibility: additive (new tables older code neither reads nor needs to fill)
-- The HTTP API: keys (only a hash of each secret is stored), per-key rate-limit windows shared by every
-- API process, and the durable run queue that `tg-parser worker` (and `serve --execute-runs`) drains.

CREATE TABLE api_keys (
    key_id      TEXT NOT NULL PRIMARY KEY,  -- the public part of a key (tgp_<key_id>_<secret>)
    name        TEXT NOT NULL UNIQUE,
    scope       TEXT NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    secret_hash TEXT NOT NULL,              -- SHA-256 of the secret, hex; compared in constant time
    created_at  TIMESTAMP_TEXT NOT NULL,
    revoked_at  TIMESTAMP_TEXT
) WITHOUT ROWID;

CREATE TABLE api_rate_windows (
    key_id       TEXT NOT NULL,
    route_group  TEXT NOT NULL,
    window_start INTEGER NOT NULL,          -- unix seconds of the window's start
    hits         INTEGER NOT NULL,
    PRIMARY KEY (key_id, route_group, window_start)
) WITHOUT ROWID;

CREATE TABLE run_requests (
    run_id           TEXT NOT NULL PRIMARY KEY,
    steps            JSON_TEXT NOT NULL,
    source_id        TEXT,
    options          JSON_TEXT NOT NULL,
    requested_by     TEXT,
    webhook_url      TEXT,
    status           TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    progress         JSON_TEXT NOT NULL,
    counts           JSON_TEXT NOT NULL,
    error            TEXT,
    created_at       TIMESTAMP_TEXT NOT NULL,
    started_at       TIMESTAMP_TEXT,
    finished_at      TIMESTAMP_TEXT,
    worker_id        TEXT,
    lease_expires_at TIMESTAMP_TEXT,
    webhook_status   TEXT CHECK (webhook_status IN ('pending', 'delivered', 'failed')),
    webhook_attempts INTEGER NOT NULL DEFAULT 0,
    webhook_error    TEXT
);

CREATE INDEX run_requests_status_idx ON run_requests (status, created_at, run_id);
CREATE INDEX run_requests_created_idx ON run_requests (created_at, run_id);
