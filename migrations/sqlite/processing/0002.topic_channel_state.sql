-- depends: 0001.initial
-- compatibility: additive (a new table older code neither reads nor needs to fill)
-- When each channel's topics were last computed, from which corpus and by which strategy, so an
-- unchanged channel is skipped even when it produced no topic, and a new strategy recomputes it.

CREATE TABLE topic_channel_state (
    channel_id   INTEGER PRIMARY KEY,
    corpus_as_of TIMESTAMP_TEXT NOT NULL,
    computed_at  TIMESTAMP_TEXT NOT NULL,
    strategy     TEXT NOT NULL,
    model        TEXT,
    prompt_id    TEXT
) WITHOUT ROWID;  -- the key is the channel's own id, never assigned by SQLite
