"""TopicStore: what topicization reads (channels, corpus, freshness). Writing goes through
ProcessingStore.replace_channel_topics, one transaction per channel."""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import BaseModel

from tg_parser.domain.models import UtcDatetime
from tg_parser.stores.base import Store


class ChannelCorpus(BaseModel):
    channel_id: int
    documents: int
    newest_processed_at: UtcDatetime


class ChannelState(BaseModel):
    channel_id: int
    corpus_as_of: UtcDatetime
    computed_at: UtcDatetime
    strategy: str
    model: str | None = None
    prompt_id: str | None = None


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

    def channel_state(self, channel_id: int) -> ChannelState | None:
        row = self.db.fetch_one("topics_channel_state", {"channel_id": channel_id})
        return ChannelState.model_validate(row) if row else None

    def save_channel_state(self, state: ChannelState) -> None:
        self.db.execute("topics_save_channel_state", state.model_dump())
