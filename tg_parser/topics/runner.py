"""Run topicization channel by channel: read the corpus, ask the strategy, gate, write in one transaction."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from loguru import logger

from tg_parser.db.base import Database
from tg_parser.domain.models import RunReport, SupportingItem
from tg_parser.logging import redact
from tg_parser.stores import ProcessingStore
from tg_parser.stores.topics import ChannelCorpus, ChannelState, CorpusDocument, TopicStore
from tg_parser.topics.model import Candidate, Topic, TopicGates, apply_gates, attach_supporting, to_records


class TopicStrategy(Protocol):
    name: str
    model: str | None
    prompt_id: str | None
    input_tokens: int
    output_tokens: int
    calls: int

    def candidates(self, corpus: Any) -> list[Candidate]: ...

    def supporting(self, topics: list[Topic], corpus: Any) -> dict[str, list[SupportingItem]]: ...


@dataclass
class ChannelOutcome:
    channel_id: int
    status: str  # "ok", "skipped", "failed"
    documents: int = 0
    topics: int = 0
    covered: int = 0
    rejected_anchors: int = 0
    error: str | None = None

    @property
    def not_covered(self) -> int:
        return self.documents - self.covered


@dataclass
class TopicizeReport:
    run_id: str
    strategy: str
    channels: list[ChannelOutcome] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    llm_calls: int = 0

    @property
    def ok(self) -> bool:
        return all(c.status != "failed" for c in self.channels)

    def counts(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "channels": len(self.channels),
            "channels_failed": sum(c.status == "failed" for c in self.channels),
            "channels_skipped": sum(c.status == "skipped" for c in self.channels),
            "topics": sum(c.topics for c in self.channels),
            "documents": sum(c.documents for c in self.channels if c.status == "ok"),
            "documents_covered": sum(c.covered for c in self.channels if c.status == "ok"),
            "documents_not_covered": sum(c.not_covered for c in self.channels if c.status == "ok"),
            "rejected_anchors": sum(c.rejected_anchors for c in self.channels),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "llm_calls": self.llm_calls,
            "per_channel": [
                {
                    "channel_id": c.channel_id,
                    "status": c.status,
                    "documents": c.documents,
                    "topics": c.topics,
                    "covered": c.covered,
                    "not_covered": c.not_covered if c.status == "ok" else None,
                    "error": c.error,
                }
                for c in self.channels
            ],
        }


def topicize_channel(
    db: Database,
    channel_id: int,
    strategy: TopicStrategy,
    gates: TopicGates,
    *,
    force: bool = False,
    info: ChannelCorpus | None = None,
) -> ChannelOutcome:
    """Topicize one channel. `info` is its row of the run's channel catalogue (asked once per run);
    without it the channel's row is asked alone (an index-only range scan)."""
    store = TopicStore(db)
    if info is None:
        info = store.channel(channel_id)
    if info is None:
        return ChannelOutcome(channel_id, "skipped", error="no processed documents")
    state = store.channel_state(channel_id)
    unchanged = (
        state is not None
        and state.corpus_as_of >= info.newest_processed_at
        and (state.strategy, state.model, state.prompt_id)
        == (strategy.name, strategy.model, strategy.prompt_id)
    )
    if not force and unchanged:
        return ChannelOutcome(
            channel_id,
            "skipped",
            documents=info.documents,
            topics=len(TopicStore(db).topics_for_channel(channel_id)),
            error="up to date (use --force)",
        )

    def corpus() -> Iterable[CorpusDocument]:
        return store.corpus(channel_id)

    text_length = {doc.source_ref: len(doc.text_clean) for doc in corpus()}
    topics, rejected = apply_gates(strategy.candidates(corpus), text_length, gates)
    attach_supporting(topics, strategy.supporting(topics, corpus), gates, set(text_length))
    cards, bundles = to_records(
        topics, channel_id, as_of=info.newest_processed_at, model=strategy.model, prompt_id=strategy.prompt_id
    )
    with db.transaction():
        TopicStore(db).replace_channel_topics(channel_id, cards, bundles)
        store.save_channel_state(
            ChannelState(
                channel_id=channel_id,
                corpus_as_of=info.newest_processed_at,
                computed_at=datetime.now(UTC),
                strategy=strategy.name,
                model=strategy.model,
                prompt_id=strategy.prompt_id,
            )
        )
    covered = {a.source_ref for t in topics for a in t.anchors} | {
        i.source_ref for t in topics for i in t.supporting
    }
    return ChannelOutcome(
        channel_id,
        "ok",
        documents=len(text_length),
        topics=len(topics),
        covered=len(covered),
        rejected_anchors=rejected,
    )


def topicize(
    db: Database,
    strategy: TopicStrategy,
    gates: TopicGates,
    *,
    run_id: str,
    channel_ids: list[int] | None = None,
    force: bool = False,
) -> TopicizeReport:
    """Topicize the given channels (default: every channel with documents); one failing channel does
    not stop the others. The run report is stored in `runs` (kind `topicize`)."""
    store = ProcessingStore(db)
    started = datetime.now(UTC)
    # The catalogue is asked once per run, not once per channel.
    catalogue = {c.channel_id: c for c in TopicStore(db).channels()} if channel_ids is None else {}
    channels = channel_ids if channel_ids is not None else list(catalogue)
    report = TopicizeReport(run_id=run_id, strategy=strategy.name)
    record = RunReport(
        run_id=run_id,
        kind="topicize",
        started_at=started,
        params={"channels": channel_ids, "force": force, "strategy": strategy.name, "model": strategy.model},
    )
    store.start_run(record)
    for channel_id in channels:
        try:
            outcome = topicize_channel(
                db, channel_id, strategy, gates, force=force, info=catalogue.get(channel_id)
            )
        except Exception as exc:  # one channel's failure is reported, the others go on
            logger.warning("topicize channel {} failed: {}: {}", channel_id, type(exc).__name__, exc)
            outcome = ChannelOutcome(channel_id, "failed", error=redact(f"{type(exc).__name__}: {exc}"))
        report.channels.append(outcome)
        logger.info("topicize channel {}: {} ({} topics)", channel_id, outcome.status, outcome.topics)
    report.input_tokens, report.output_tokens, report.llm_calls = (
        strategy.input_tokens,
        strategy.output_tokens,
        strategy.calls,
    )
    record.finished_at = datetime.now(UTC)
    record.status = (
        "ok" if report.ok else ("partial" if any(c.status == "ok" for c in report.channels) else "failed")
    )
    record.counts = report.counts()
    store.finish_run(record)
    return report
