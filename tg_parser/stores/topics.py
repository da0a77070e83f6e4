"""TopicStore: what topicization reads (channels, corpus, freshness). Writing goes through
ProcessingStore.replace_channel_topics, one transaction per channel."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from pydantic import BaseModel

from tg_parser.domain.models import UtcDatetime
from tg_parser.stores.base import Store


class ChannelCorpus(BaseModel):
    channel_id: int
    documents: int
    newest_processed_at: UtcDatetime


class CorpusDocument(BaseModel):
    source_ref: str
    summary: str | None = None
    text_clean: str
    topics: list[str] = []
    language: str | None = None
    processed_at: UtcDatetime
    views: int | None = None
    forwards: int | None = None


class TopicStore(Store):
    def channels(self) -> list[ChannelCorpus]:
        # MAX() over a SQLite timestamp column is text; the model parses it, so both dialects agree.
        return [ChannelCorpus.model_validate(row) for row in self.db.fetch_all("topics_document_channels")]

    def corpus(self, channel_id: int) -> Iterator[CorpusDocument]:
        for row in self.db.stream("topics_corpus", {"channel_id": channel_id}, batch_size=2000):
            yield CorpusDocument.model_validate(row)

    def topics_computed_at(self, channel_id: int) -> datetime | None:
        value = self.db.fetch_scalar("topics_channel_newest_card", {"channel_id": channel_id})
        if value is None:
            return None
        return ChannelCorpus(
            channel_id=channel_id, documents=0, newest_processed_at=value
        ).newest_processed_at
