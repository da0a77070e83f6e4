DROP TABLE named_locks;
