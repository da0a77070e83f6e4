"""The one-shot pipeline behind `tg-parser run`: ingest → process → topicize → export."""
