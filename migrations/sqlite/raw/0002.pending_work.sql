-- depends: 0001.initial
-- compatibility: breaking (older writers would store messages without queueing them, so they would never be processed)
-- The pending-work queue: one row per raw message that still needs processing (no document, no
-- permanent failure). Written in the transaction that inserts the raw message (the same file), deleted
-- once its document or permanent failure is written, so choosing work reads the queue (the work), never
-- the archive.

CREATE TABLE pending_work (
    source_ref TEXT NOT NULL PRIMARY KEY REFERENCES raw_messages (source_ref) ON DELETE CASCADE,
    channel_id INTEGER NOT NULL,
    date       TIMESTAMP_TEXT NOT NULL,
    source_id  TEXT
);

CREATE INDEX pending_work_channel_date_idx ON pending_work (channel_id, date, source_ref);

-- An existing install: every stored message is queued. This file cannot see the processing store's
-- file, so the messages already processed (or permanently failed) are taken out by the first
-- `process` run's reconcile (pending_reconcile, one statement over the queue), and are never selected
-- before that (the claim skips a message with a document or a permanent failure).
INSERT INTO pending_work (source_ref, channel_id, date, source_id)
SELECT source_ref, channel_id, date, source_id FROM raw_messages;
