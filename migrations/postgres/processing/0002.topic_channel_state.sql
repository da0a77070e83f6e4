-- depends: 0001.initial
-- When each channel's topics were last computed, from which corpus and by which strategy, so an
-- unchanged channel is skipped even when it produced no topic, and a new strategy recomputes it.

CREATE TABLE topic_channel_state (
    channel_id   bigint PRIMARY KEY,
    corpus_as_of timestamptz NOT NULL,
    computed_at  timestamptz NOT NULL,
    strategy     text NOT NULL,
    model        text,
    prompt_id    text
);
