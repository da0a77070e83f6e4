-- depends: 0002.pending_work
-- compatibility: breaking (older code would refresh counters on raw_messages, which readers no longer prefer)
-- raw store hygiene (issue 17):
-- 1. Counters (views/forwards/replies) refreshed on re-read move to a narrow table. Updating them on
--    the wide raw_messages row was never HOT (a ~790-byte row and 4 index entries per refresh); here a
--    refresh rewrites a ~60-byte row whose only index (the primary key) it does not change, and the
--    fillfactor leaves room on the page for the new version, so the update is HOT. raw_messages keeps
--    the counters as first seen (the snapshot); readers take COALESCE(counters, snapshot), so existing
--    rows need no copy: the values updated in place until now are still read from raw_messages.
-- 2. Indexes no query runs on are dropped: raw_messages_thread_idx (none), raw_messages_source_idx
--    (only raw_max_message_id, which nothing called; removed).
-- 3. Text keys compare with COLLATE "C" (byte order: SQLite's order, faster, immune to glibc
--    collation changes); payload columns compress new values with lz4 where the server has it.
-- 4. CHECKs: a positive message id, and source_ref = tg:<channel_id>:<message_type>:<message_id>
--    (tg_parser.domain.ids.make_source_ref). Added NOT VALID, then VALIDATE: yoyo runs this file as one
--    transaction, which holds the ALTER's ACCESS EXCLUSIVE lock anyway (the collation change rebuilds
--    the key indexes); a DBA applying it by hand on a large install can run the VALIDATE statements
--    later, in their own transactions (SHARE UPDATE EXCLUSIVE: writes go on meanwhile).
-- The pending-work queue (raw 0002, when present) gets the same collation on its key.

ALTER TABLE raw_messages
    ALTER COLUMN source_ref TYPE text COLLATE "C",
    ALTER COLUMN source_id TYPE text COLLATE "C";
ALTER TABLE raw_message_versions ALTER COLUMN source_ref TYPE text COLLATE "C";

DO $$
BEGIN
    IF to_regclass('pending_work') IS NOT NULL THEN
        ALTER TABLE pending_work
            ALTER COLUMN source_ref TYPE text COLLATE "C",
            ALTER COLUMN source_id TYPE text COLLATE "C";
    END IF;
    IF (SELECT 'lz4' = ANY (enumvals) FROM pg_settings WHERE name = 'default_toast_compression') THEN
        ALTER TABLE raw_messages
            ALTER COLUMN raw_payload SET COMPRESSION lz4,
            ALTER COLUMN media SET COMPRESSION lz4;
        ALTER TABLE raw_message_versions ALTER COLUMN raw_payload SET COMPRESSION lz4;
    END IF;
END
$$;

DROP INDEX raw_messages_thread_idx;
DROP INDEX raw_messages_source_idx;

ALTER TABLE raw_messages
    ADD CONSTRAINT raw_messages_message_id_check CHECK (message_id > 0) NOT VALID,
    ADD CONSTRAINT raw_messages_source_ref_check
        CHECK (source_ref = 'tg:' || channel_id::text || ':' || message_type || ':' || message_id::text) NOT VALID;
ALTER TABLE raw_messages VALIDATE CONSTRAINT raw_messages_message_id_check;
ALTER TABLE raw_messages VALIDATE CONSTRAINT raw_messages_source_ref_check;

-- The latest counters of a message once a re-read saw them change (no row until then: the snapshot's
-- values are the latest). fillfactor 50: a refresh pass over a channel updates every row of a page
-- once, and each new version needs room on its own page to stay HOT (rows are ~60 bytes, so the
-- table stays small). Autovacuum visits it after 2 % of its rows changed (the default 20 % lets dead
-- versions pile up in a table that is mostly updates), and ANALYZE after 5 %.
CREATE TABLE raw_message_counters (
    source_ref  text COLLATE "C" PRIMARY KEY REFERENCES raw_messages (source_ref) ON DELETE CASCADE,
    views       bigint,
    forwards    bigint,
    replies     bigint,
    observed_at timestamptz NOT NULL
) WITH (
    fillfactor = 50,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.05
);
