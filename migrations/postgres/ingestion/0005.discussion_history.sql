-- depends: 0004.named_locks
-- compatibility: additive (new tables older code neither reads nor needs to fill)
-- ingestion store (issue 16): comments are read from the linked discussion group's own history, one
-- paged stream per source from its own cursor, instead of one request per post thread.
--
-- discussion_cursors: one row per source with comments on. `last_message_id` is the stream cursor (the
-- group's id space; every message up to it has been looked at, and its comments are stored);
-- `floor_id` is where the stream started: a thread of a post published before it may hold older
-- comments, which are read thread by thread once (comment_cursors). `chat_id`/`access_hash` identify
-- the group (NULL until the first run asks Telegram); `history_error` says why the group's history
-- cannot be read (a private group this account has not joined: comments are then read thread by thread).
--
-- discussion_threads: the group's forwarded copy of a channel post (a thread root) → that post, so a
-- comment (whose reply header names the root) is attached to its post. post_id NULL: the root is not a
-- channel post (the group's own chatter), remembered so it is not looked up again.
--
-- Existing installs: a source's stream starts at the highest of its per-thread cursors, so nothing is
-- read twice; the threads seen again are completed from their own cursors, as before.

CREATE TABLE discussion_cursors (
    source_id       text COLLATE "C" NOT NULL PRIMARY KEY REFERENCES sources (source_id) ON DELETE CASCADE,
    chat_id         bigint,
    access_hash     bigint,
    last_message_id bigint NOT NULL DEFAULT 0,
    floor_id        bigint NOT NULL DEFAULT 0,
    history_error   text,
    checked_at      timestamptz,
    updated_at      timestamptz NOT NULL,
    CONSTRAINT discussion_cursors_ids_check CHECK (floor_id >= 0 AND last_message_id >= floor_id)
);

CREATE TABLE discussion_threads (
    source_id  text COLLATE "C" NOT NULL REFERENCES sources (source_id) ON DELETE CASCADE,
    root_id    bigint NOT NULL,
    post_id    bigint,
    post_date  timestamptz,
    PRIMARY KEY (source_id, root_id),
    CONSTRAINT discussion_threads_ids_check CHECK (root_id > 0 AND (post_id IS NULL OR post_id > 0))
);

INSERT INTO discussion_cursors (source_id, last_message_id, floor_id, updated_at)
SELECT source_id, MAX(last_comment_id), MAX(last_comment_id), MAX(updated_at)
FROM comment_cursors
GROUP BY source_id;
