-- depends: 0001.initial
-- compatibility: additive (a new table older code neither reads nor needs to fill)
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
