"""The extractive topic strategy: hashtags shared by enough documents of a channel become topics.

No LLM and no network. Anchors are the most engaging documents carrying the hashtag (views plus ten
times forwards), scored from 0.6 (least) to 1.0 (most) so they pass the cluster gate; the rest of the
hashtag's documents become supporting items scored 0.5..1.0 the same way. Ties break on source_ref, so
the same corpus always gives the same topics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from tg_parser.domain.models import Anchor, SupportingItem
from tg_parser.stores.topics import CorpusDocument
from tg_parser.topics.model import Candidate, Topic, normalise_title

EXTRACTIVE_MODEL = "extractive"
EXTRACTIVE_PROMPT_ID = "extractive-topics:1"


def _engagement(doc: CorpusDocument) -> int:
    return (doc.views or 0) + 10 * (doc.forwards or 0)


def _scaled(value: int, top: int, low: float) -> float:
    return round(low + (1.0 - low) * (value / top if top else 1.0), 4)


class ExtractiveTopicStrategy:
    name = "extractive"
    model: str | None = EXTRACTIVE_MODEL
    prompt_id: str | None = EXTRACTIVE_PROMPT_ID

    def __init__(self, *, min_documents: int = 3, max_anchors: int = 3) -> None:
        self.min_documents = min_documents
        self.max_anchors = max_anchors
        self.input_tokens = 0
        self.output_tokens = 0
        self.calls = 0
        self._members: dict[str, list[tuple[int, str]]] = {}

    def candidates(self, corpus: Callable[[], Iterable[CorpusDocument]]) -> list[Candidate]:
        members: dict[str, list[tuple[int, str]]] = {}
        for doc in corpus():
            for tag in dict.fromkeys(doc.topics):
                members.setdefault(tag, []).append((_engagement(doc), doc.source_ref))
        self._members = {tag: docs for tag, docs in members.items() if len(docs) >= self.min_documents}
        found = []
        for tag in sorted(self._members):
            docs = sorted(self._members[tag], key=lambda d: (-d[0], d[1]))
            top = docs[0][0]
            anchors = [
                Anchor(source_ref=ref, score=_scaled(eng, top, 0.6)) for eng, ref in docs[: self.max_anchors]
            ]
            found.append(
                Candidate(
                    title=f"#{tag}",
                    summary=f"{len(docs)} messages of the channel tagged #{tag}.",
                    tags=[tag],
                    anchors=anchors,
                )
            )
        return found

    def supporting(
        self, topics: list[Topic], corpus: Callable[[], Iterable[CorpusDocument]]
    ) -> dict[str, list[SupportingItem]]:
        by_key = {normalise_title(f"#{tag}"): tag for tag in self._members}
        scored: dict[str, list[SupportingItem]] = {}
        for topic in topics:
            tag = by_key.get(normalise_title(topic.title))
            if tag is None:
                continue
            docs = self._members[tag]
            top = max(eng for eng, _ in docs)
            scored[topic.topic_id] = [
                SupportingItem(source_ref=ref, score=_scaled(eng, top, 0.5), reason=f"tagged #{tag}")
                for eng, ref in sorted(docs, key=lambda d: (-d[0], d[1]))
            ]
        return scored
