-- name: pending_enqueue
-- Queue newly stored messages (a JSON array of source_refs), in the transaction that inserted them into
-- raw_messages (RawStore.store_rows; the queue is in the raw store's file, so the two writes commit
-- together), one statement per batch. A ref already queued is left alone.
-- Served by: raw_messages primary key, pending_work primary key.
-- example: refs='["tg:1500000001:post:1000","tg:1500000001:post:1001"]'
INSERT INTO raw.pending_work (source_ref, channel_id, date, source_id)
SELECT r.source_ref, r.channel_id, r.date, r.source_id
FROM raw.raw_messages AS r
WHERE r.source_ref IN (SELECT value FROM json_each(:refs))
ON CONFLICT (source_ref) DO NOTHING;

-- name: pending_dequeue
-- Take messages whose document or permanent failure is written (a JSON array of refs) out of the queue;
-- the process coordinator runs it in its own transaction after the one that wrote them (the stores are
-- separate files: a crash in between leaves a queued row that the next claim to reach it finds done and
-- deletes, never a message that is neither done nor queued). Served by: pending_work primary key.
-- example: refs='["tg:1500000001:post:1000","tg:1500000001:post:1001"]'
DELETE FROM raw.pending_work WHERE source_ref IN (SELECT value FROM json_each(:refs));
