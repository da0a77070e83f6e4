"""What a topicization strategy produces, and the quality gates that turn it into cards and bundles.

A strategy (LLM or extractive) proposes candidate topics with scored anchors and, per topic, scored
supporting items. Everything after that is deterministic and shared: candidates with the same
normalised title are merged, anchors deduplicated and sorted (score desc, ref asc), the gates applied,
ids derived from the first anchor, and collisions resolved by a fixed order.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime

from tg_parser.config import Settings
from tg_parser.domain.ids import topic_id as make_topic_id
from tg_parser.domain.models import Anchor, SupportingItem, TopicBundle, TopicCard, sort_anchors


@dataclass(frozen=True)
class TopicGates:
    singleton_min_score: float = 0.75
    singleton_min_chars: int = 300
    cluster_min_score: float = 0.6
    cluster_min_anchors: int = 2
    cluster_max_anchors: int = 3
    supporting_min_score: float = 0.5
    supporting_max_items: int = 50

    @classmethod
    def from_settings(cls, settings: Settings) -> TopicGates:
        return cls(
            singleton_min_score=settings.topic_singleton_min_score,
            singleton_min_chars=settings.topic_singleton_min_chars,
            cluster_min_score=settings.topic_cluster_min_score,
            cluster_min_anchors=settings.topic_cluster_min_anchors,
            cluster_max_anchors=settings.topic_cluster_max_anchors,
            supporting_min_score=settings.topic_supporting_min_score,
            supporting_max_items=settings.topic_supporting_max_items,
        )


@dataclass
class Candidate:
    """A proposed topic, before merging and gating."""

    title: str
    summary: str = ""
    tags: list[str] = field(default_factory=list)
    anchors: list[Anchor] = field(default_factory=list)

    @property
    def key(self) -> str:
        return normalise_title(self.title)


@dataclass
class Topic:
    """A topic that passed the gates (its id is fixed once anchors are sorted)."""

    title: str
    summary: str
    tags: list[str]
    kind: str
    anchors: list[Anchor]
    supporting: list[SupportingItem] = field(default_factory=list)

    @property
    def topic_id(self) -> str:
        return make_topic_id(self.anchors[0].source_ref)


def normalise_title(title: str) -> str:
    folded = unicodedata.normalize("NFKC", title).casefold()
    return " ".join(re.findall(r"\w+", folded))


def merge_candidates(candidates: list[Candidate]) -> list[Candidate]:
    """Merge candidates with the same normalised title, in first-seen order (batch order is fixed)."""
    merged: dict[str, Candidate] = {}
    for candidate in candidates:
        key = candidate.key
        if not key:
            continue
        if key not in merged:
            merged[key] = Candidate(
                candidate.title.strip(),
                candidate.summary.strip(),
                list(candidate.tags),
                list(candidate.anchors),
            )
            continue
        target = merged[key]
        target.anchors.extend(candidate.anchors)
        if not target.summary and candidate.summary:
            target.summary = candidate.summary.strip()
        for tag in candidate.tags:
            if tag not in target.tags:
                target.tags.append(tag)
    return list(merged.values())


def apply_gates(
    candidates: list[Candidate], text_length: dict[str, int], gates: TopicGates
) -> tuple[list[Topic], int]:
    """Cards that pass the gates, ids unique; returns them and how many anchors were rejected for not
    being in the corpus."""
    rejected = 0
    topics: list[Topic] = []
    for candidate in merge_candidates(candidates):
        known = [a for a in candidate.anchors if a.source_ref in text_length]
        rejected += len(candidate.anchors) - len(known)
        anchors = sort_anchors(known)
        strong = [a for a in anchors if a.score >= gates.cluster_min_score]
        tags = sorted({t.strip().casefold() for t in candidate.tags if t.strip()})
        if len(strong) >= gates.cluster_min_anchors:
            topics.append(
                Topic(
                    candidate.title, candidate.summary, tags, "cluster", strong[: gates.cluster_max_anchors]
                )
            )
        elif (
            anchors
            and anchors[0].score >= gates.singleton_min_score
            and text_length[anchors[0].source_ref] >= gates.singleton_min_chars
        ):
            topics.append(Topic(candidate.title, candidate.summary, tags, "singleton", anchors[:1]))
    # Two topics may claim the same first anchor (and so the same id): the stronger one keeps it.
    topics.sort(
        key=lambda t: (
            -t.anchors[0].score,
            -len(t.anchors),
            t.anchors[0].source_ref,
            normalise_title(t.title),
        )
    )
    unique: dict[str, Topic] = {}
    for topic in topics:
        unique.setdefault(topic.topic_id, topic)
    return sorted(unique.values(), key=lambda t: t.topic_id), rejected


def attach_supporting(
    topics: list[Topic], scored: dict[str, list[SupportingItem]], gates: TopicGates, known_refs: set[str]
) -> None:
    """Supporting items per topic: in the corpus, not an anchor, above the gate, best first, capped."""
    for topic in topics:
        anchor_refs = {a.source_ref for a in topic.anchors}
        best: dict[str, SupportingItem] = {}
        for item in scored.get(topic.topic_id, []):
            if item.source_ref in anchor_refs or item.source_ref not in known_refs:
                continue
            if item.score < gates.supporting_min_score:
                continue
            if item.source_ref not in best or item.score > best[item.source_ref].score:
                best[item.source_ref] = item
        ordered = sorted(best.values(), key=lambda i: (-i.score, i.source_ref))
        topic.supporting = ordered[: gates.supporting_max_items]


def to_records(
    topics: list[Topic], channel_id: int, *, as_of: datetime, model: str | None, prompt_id: str | None
) -> tuple[list[TopicCard], list[TopicBundle]]:
    """Cards and bundles; timestamps are the corpus's own (newest document), so output is reproducible."""
    cards, bundles = [], []
    for topic in topics:
        cards.append(
            TopicCard(
                topic_id=topic.topic_id,
                channel_id=channel_id,
                title=topic.title,
                summary=topic.summary,
                kind=topic.kind,  # type: ignore[arg-type]
                anchors=topic.anchors,
                tags=topic.tags,
                model=model,
                prompt_id=prompt_id,
                created_at=as_of,
                updated_at=as_of,
            )
        )
        bundles.append(
            TopicBundle(
                topic_id=topic.topic_id, channel_id=channel_id, items=topic.supporting, updated_at=as_of
            )
        )
    return cards, bundles
