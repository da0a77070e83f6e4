-- depends: 0005.hygiene
-- compatibility: additive (two new tables; older code never reads them)
-- Recovery of dead workers and a 429 pause shared by every process (issue 14).
-- 1. run_leases: a `process` run's heartbeat. The run's process holds a lease on its run row and renews
--    it with its work leases; a row whose lease lapsed is a run whose process died: any worker marks
--    that run failed ('abandoned: ...') with the counts it had written, and deletes the lease.
-- 2. llm_pauses: a Retry-After seen by any process, keyed by sha256 of the endpoint and the API key (the
--    key itself is never stored): every process sending with that endpoint and key waits until
--    paused_until.

CREATE TABLE run_leases (
    run_id     text COLLATE "C" PRIMARY KEY,
    worker_id  text COLLATE "C" NOT NULL,
    expires_at timestamptz NOT NULL
);

CREATE TABLE llm_pauses (
    key_hash     text COLLATE "C" PRIMARY KEY,
    paused_until timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
