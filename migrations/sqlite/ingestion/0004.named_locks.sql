-- depends: 0003.hygiene
-- compatibility: additive (a new table only DB_POOL_MODE=transaction uses)
-- ingestion store: named try-locks kept in a table (DB_POOL_MODE=transaction on PostgreSQL, see the
-- PostgreSQL migration). SQLite locks with flock and never writes here; the table exists so both
-- dialects have the same tables (the bulk transfer copies what it finds).

CREATE TABLE named_locks (
    name         TEXT NOT NULL PRIMARY KEY,
    owner        TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    acquired_at  TIMESTAMP_TEXT NOT NULL,
    expires_at   TIMESTAMP_TEXT NOT NULL,
    CHECK (expires_at > acquired_at)
);
