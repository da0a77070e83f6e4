-- depends: 0005.hygiene
-- compatibility: additive (two new tables; older code never reads them)
-- Recovery of dead workers and a 429 pause shared by every process (issue 14); see the PostgreSQL
-- migration for what each table is for.

CREATE TABLE run_leases (
    run_id     TEXT NOT NULL PRIMARY KEY,
    worker_id  TEXT NOT NULL,
    expires_at TIMESTAMP_TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE llm_pauses (
    key_hash     TEXT NOT NULL PRIMARY KEY,
    paused_until TIMESTAMP_TEXT NOT NULL,
    updated_at   TIMESTAMP_TEXT NOT NULL
) WITHOUT ROWID;
