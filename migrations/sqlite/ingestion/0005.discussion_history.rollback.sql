DROP TABLE discussion_threads;
DROP TABLE discussion_cursors;
