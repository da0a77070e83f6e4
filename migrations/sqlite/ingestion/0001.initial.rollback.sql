DROP TABLE ingest_runs;
DROP TABLE comment_cursors;
DROP TABLE sources;
