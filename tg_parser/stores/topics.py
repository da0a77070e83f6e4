"""TopicStore: everything about topics — what topicization reads (channels, corpus, freshness) and the
topic cards, their channel membership and bundles it writes (one transaction per channel)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import closing
from typing import Any

from pydantic import BaseModel

from tg_parser.domain.models import TopicBundle, TopicCard, UtcDatetime
from tg_parser.stores.base import KEYSET_START, Store


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

    def channel(self, channel_id: int) -> ChannelCorpus | None:
        """One channel's entry of `channels()`, or None when it has no document."""
        row = self.db.fetch_one("topics_document_channel", {"channel_id": channel_id})
        return ChannelCorpus.model_validate(row) if row else None

    def corpus(self, channel_id: int) -> Iterator[CorpusDocument]:
        """The channel's documents in message order, read a batch at a time, each batch its own short
        read: the caller (a strategy calling the LLM) works between batches with no transaction open."""
        batches = self.db.keyset_batches(
            "topics_corpus",
            {"channel_id": channel_id},
            start={"after_date": KEYSET_START, "after_ref": ""},
            after=lambda row: {"after_date": row["message_date"], "after_ref": row["source_ref"]},
            batch_size=2000,
        )
        with closing(batches):
            for batch in batches:
                for row in batch:
                    yield CorpusDocument.model_validate(row)

    def channel_state(self, channel_id: int) -> ChannelState | None:
        row = self.db.fetch_one("topics_channel_state", {"channel_id": channel_id})
        return ChannelState.model_validate(row) if row else None

    def save_channel_state(self, state: ChannelState) -> None:
        self.db.execute("topics_save_channel_state", state.model_dump())

    # --- topics -------------------------------------------------------------------------------------

    def replace_channel_topics(
        self, channel_id: int, cards: Sequence[TopicCard], bundles: Sequence[TopicBundle]
    ) -> None:
        """Replace a channel's cards, membership and bundles in one transaction (no stale topic lingers)."""
        with self.db.transaction():
            self.db.fetch_one("topics_lock_channel", {"channel_id": channel_id})
            self.db.execute("topics_delete_channel", {"channel_id": channel_id})
            if cards:
                self.db.execute_many("topics_insert_card", [self._card_row(c) for c in cards])
                self.db.execute_many(
                    "topics_insert_channel",
                    [{"topic_id": c.topic_id, "channel_id": c.channel_id} for c in cards],
                )
            if bundles:
                self.db.execute_many("topics_upsert_bundle", [self._bundle_row(b) for b in bundles])

    @staticmethod
    def _card_row(card: TopicCard) -> dict[str, Any]:
        row = card.model_dump(mode="python")
        row["anchors"] = [a.model_dump() for a in card.anchors]
        return row

    @staticmethod
    def _bundle_row(bundle: TopicBundle) -> dict[str, Any]:
        row = bundle.model_dump(mode="python")
        row["items"] = [i.model_dump() for i in bundle.items]
        return row

    def topics_for_channel(self, channel_id: int) -> list[TopicCard]:
        return [
            TopicCard.model_validate(r)
            for r in self.db.fetch_all("topics_list_by_channel", {"channel_id": channel_id})
        ]

    def all_topics(self) -> list[TopicCard]:
        return [TopicCard.model_validate(r) for r in self.db.fetch_all("topics_list_all")]

    def get_topic(self, topic_id: str) -> TopicCard | None:
        row = self.db.fetch_one("topics_get_card", {"topic_id": topic_id})
        return TopicCard.model_validate(row) if row else None

    def get_bundle(self, topic_id: str) -> TopicBundle | None:
        row = self.db.fetch_one("topics_get_bundle", {"topic_id": topic_id})
        return TopicBundle.model_validate(row) if row else None
