DROP TABLE runs;
DROP TABLE topic_bundles;
DROP TABLE topic_channels;
DROP TABLE topic_cards;
DROP TABLE work_leases;
DROP TABLE processing_failures;
DROP TABLE processed_documents;
