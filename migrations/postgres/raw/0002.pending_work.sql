-- depends: 0001.initial
-- compatibility: breaking (older writers would store messages without queueing them, so they would never be processed)
-- The pending-work queue: one row per raw message that still needs processing (no document, no
-- permanent failure). Written in the transaction that inserts the raw message, deleted once its
-- document or permanent failure is written, so choosing work reads the queue (the work), never the
-- archive. A row whose document exists anyway (a crash between the two writes) is skipped by the
-- claim and deleted by the next run's reconcile (pending_reconcile).

CREATE TABLE pending_work (
    source_ref text PRIMARY KEY REFERENCES raw_messages (source_ref) ON DELETE CASCADE,
    channel_id bigint NOT NULL,
    date       timestamptz NOT NULL,
    source_id  text
);

CREATE INDEX pending_work_channel_date_idx ON pending_work (channel_id, date, source_ref);

-- An existing install: the pending set, computed once (raw messages with no document and no permanent
-- failure). The processing store's tables exist unless this is a fresh install (nothing processed yet).
DO $$
BEGIN
    IF to_regclass('processing.processed_documents') IS NOT NULL
       AND to_regclass('processing.processing_failures') IS NOT NULL THEN
        INSERT INTO pending_work (source_ref, channel_id, date, source_id)
        SELECT r.source_ref, r.channel_id, r.date, r.source_id
        FROM raw_messages AS r
        WHERE NOT EXISTS (SELECT 1 FROM processing.processed_documents AS d WHERE d.source_ref = r.source_ref)
          AND NOT EXISTS (
              SELECT 1 FROM processing.processing_failures AS f WHERE f.source_ref = r.source_ref AND f.permanent
          );
    ELSE
        INSERT INTO pending_work (source_ref, channel_id, date, source_id)
        SELECT source_ref, channel_id, date, source_id FROM raw_messages;
    END IF;
END
$$;
