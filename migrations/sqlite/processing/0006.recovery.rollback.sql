DROP TABLE llm_pauses;
DROP TABLE run_leases;
