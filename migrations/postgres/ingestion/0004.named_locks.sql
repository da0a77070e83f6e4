-- depends: 0003.hygiene
-- compatibility: additive (a new table only DB_POOL_MODE=transaction uses)
-- ingestion store: named try-locks kept in a table, for DB_POOL_MODE=transaction (PgBouncer transaction
-- pooling), where a session advisory lock cannot be held: the server connection changes between
-- transactions. A holder owns its row (owner is a random token), renews expires_at while its block runs,
-- and deletes the row at the end; a row whose expires_at has passed belongs to a crashed holder and is
-- taken over. In session mode (the default) the advisory lock is used and this table stays empty.

CREATE TABLE named_locks (
    name         TEXT NOT NULL PRIMARY KEY,
    owner        TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    acquired_at  timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    CHECK (expires_at > acquired_at)
);
