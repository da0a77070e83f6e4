-- compatibility: breaking (the first schema: no older code runs without it)
-- processing store: processed documents, failures, work leases, topics, bundles and run reports.

CREATE TABLE processed_documents (
    source_ref       text PRIMARY KEY,
    id               text NOT NULL UNIQUE,
    channel_id       bigint NOT NULL,
    message_date     timestamptz NOT NULL,
    processed_at     timestamptz NOT NULL,
    text_clean       text NOT NULL,
    summary          text,
    topics           jsonb NOT NULL,
    entities         jsonb NOT NULL,
    language         text,
    model            text NOT NULL,
    prompt_id        text NOT NULL,
    pipeline_version text NOT NULL,
    input_tokens     integer,
    output_tokens    integer,
    metadata         jsonb NOT NULL
);

CREATE INDEX processed_documents_channel_date_idx ON processed_documents (channel_id, message_date, source_ref);

CREATE TABLE processing_failures (
    source_ref      text PRIMARY KEY,
    channel_id      bigint,
    error_class     text NOT NULL,
    error_message   text NOT NULL DEFAULT '',
    permanent       boolean NOT NULL DEFAULT false,
    attempts        integer NOT NULL DEFAULT 1,
    first_failed_at timestamptz NOT NULL,
    last_failed_at  timestamptz NOT NULL,
    run_id          text
);

CREATE TABLE work_leases (
    source_ref text PRIMARY KEY,
    worker_id  text NOT NULL,
    leased_at  timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);

CREATE INDEX work_leases_expires_idx ON work_leases (expires_at);

CREATE TABLE topic_cards (
    topic_id   text PRIMARY KEY,
    channel_id bigint NOT NULL,
    title      text NOT NULL,
    summary    text NOT NULL DEFAULT '',
    kind       text NOT NULL CHECK (kind IN ('singleton', 'cluster')),
    anchors    jsonb NOT NULL,
    tags       jsonb NOT NULL,
    model      text,
    prompt_id  text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    metadata   jsonb NOT NULL
);

CREATE INDEX topic_cards_channel_idx ON topic_cards (channel_id, topic_id);

CREATE TABLE topic_channels (
    topic_id   text NOT NULL REFERENCES topic_cards (topic_id) ON DELETE CASCADE,
    channel_id bigint NOT NULL,
    PRIMARY KEY (topic_id, channel_id)
);

CREATE INDEX topic_channels_channel_idx ON topic_channels (channel_id, topic_id);

CREATE TABLE topic_bundles (
    topic_id   text PRIMARY KEY REFERENCES topic_cards (topic_id) ON DELETE CASCADE,
    channel_id bigint NOT NULL,
    items      jsonb NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE runs (
    run_id      text PRIMARY KEY,
    kind        text NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    status      text NOT NULL,
    params      jsonb NOT NULL,
    counts      jsonb NOT NULL,
    error       text
);

CREATE INDEX runs_kind_started_idx ON runs (kind, started_at);
