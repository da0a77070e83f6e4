DROP TABLE pending_work;
