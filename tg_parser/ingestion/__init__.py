"""Ingestion: the Telegram client boundary, incremental post and comment ingestion with cron-safe locks
and flood control, and the streaming import of Telegram Desktop exports."""
