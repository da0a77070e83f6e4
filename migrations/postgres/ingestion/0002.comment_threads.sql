-- depends: 0001.initial
-- compatibility: additive (a new table older code neither reads nor needs to fill)
-- ingestion store: channel posts whose comment thread cannot be read (Telegram answers MSG_ID_INVALID:
-- the post has no discussion thread, e.g. it predates the linked group). Ingestion marks them here and
-- never asks again, instead of retrying forever. thread_id is the channel post id.

CREATE TABLE comment_threads_unavailable (
    source_id  text NOT NULL REFERENCES sources (source_id) ON DELETE CASCADE,
    thread_id  bigint NOT NULL,
    reason     text NOT NULL,
    marked_at  timestamptz NOT NULL,
    PRIMARY KEY (source_id, thread_id)
);
