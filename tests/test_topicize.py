"""Topicization on both dialects against the local OpenAI-compatible server (real openai SDK path)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import jsonschema
import pytest
from click.testing import CliRunner
from support.cli import db_env
from support.llm_server import LlmRequest, LlmServer, error

from tg_parser.cli.main import cli
from tg_parser.domain.models import Anchor, ProcessedDocument, RawMessage
from tg_parser.export import export
from tg_parser.export.validation import load_schema, schema_for_entry
from tg_parser.llm.client import LlmClient
from tg_parser.stores import ProcessingStore, RawStore
from tg_parser.stores.topics import TopicStore
from tg_parser.topics.extractive import ExtractiveTopicStrategy
from tg_parser.topics.llm import LlmTopicStrategy
from tg_parser.topics.model import Candidate, TopicGates, apply_gates
from tg_parser.topics.runner import topicize

CHANNEL, OTHER = 5005, 6006
T0 = datetime(2025, 1, 1, tzinfo=UTC)
THEMES = ("rockets", "cooking", "football")
_LINE = re.compile(r"^\[(tg:[^\]]+)\] (.*)$", re.M)


def seed(db, channel: int = CHANNEL, count: int = 60, hashtags: bool = False) -> list[str]:
    raw, proc = RawStore(db), ProcessingStore(db)
    messages, docs = [], []
    for i in range(1, count + 1):
        theme = THEMES[i % len(THEMES)]
        text = f"Post {i} about {theme}. " + ("Long details. " * 30 if i % 7 == 0 else "Short.")
        if hashtags:
            text += f" #{theme}"
        date = T0 + timedelta(hours=i)
        messages.append(
            RawMessage.build(
                channel_id=channel,
                message_type="post",
                message_id=i,
                date=date,
                text=text,
                views=i * 10,
                forwards=i % 4,
            )
        )
        docs.append(
            ProcessedDocument(
                source_ref=f"tg:{channel}:post:{i}",
                channel_id=channel,
                message_date=date,
                processed_at=date,
                text_clean=text,
                summary=f"About {theme} ({i}).",
                topics=[theme] if hashtags else [],
                model="m",
                prompt_id="p",
                pipeline_version="1",
            )
        )
    raw.store_batch(messages)
    proc.upsert_documents(docs)
    return [d.source_ref for d in docs]


def topics_handler(request: LlmRequest) -> dict:
    """Per batch: one topic per theme present, anchored on that theme's documents in the batch."""
    by_theme: dict[str, list[str]] = {}
    for ref, rest in _LINE.findall(request.user_text):
        theme = next(t for t in THEMES if t in rest)
        by_theme.setdefault(theme, []).append(ref)
    topics = []
    for theme, refs in sorted(by_theme.items()):
        anchors = [{"source_ref": ref, "score": round(0.9 - 0.1 * n, 2)} for n, ref in enumerate(refs[:4])]
        topics.append(
            {
                "title": f"All about {theme.upper()}",
                "summary": f"Posts on {theme}.",
                "tags": [theme],
                "anchors": anchors,
            }
        )
    return {"topics": topics}


def supporting_handler(request: LlmRequest) -> dict:
    keys = dict(re.findall(r"^(T\d+): All about (\w+)", request.user_text, re.M))
    items = []
    for ref, rest in _LINE.findall(request.user_text):
        for key, theme in keys.items():
            if theme.lower() in rest:
                items.append({"topic": key, "source_ref": ref, "score": 0.7, "reason": "same theme"})
    return {"items": items}


@pytest.fixture
def server():
    with LlmServer() as srv:
        srv.handlers["topics"] = topics_handler
        srv.handlers["supporting_items"] = supporting_handler
        yield srv


def llm_strategy(settings, server, batch_tokens: int = 500) -> LlmTopicStrategy:
    llm_settings = settings.model_copy(
        update={"openai_base_url": server.base_url, "llm_model": "gpt-5-mini", "llm_max_retries": 0}
    )
    return LlmTopicStrategy(LlmClient.from_settings(llm_settings), batch_tokens=batch_tokens)


def test_large_channel_goes_in_batches_and_merges(db, settings, server):
    refs = seed(db)
    report = topicize(db, llm_strategy(settings, server), TopicGates(), run_id="r1")
    topic_requests = [r for r in server.requests if r.schema_name == "topics"]
    assert len(topic_requests) > 2  # never the whole channel in one prompt
    seen = [ref for r in topic_requests for ref, _ in _LINE.findall(r.user_text)]
    assert sorted(seen) == sorted(refs)  # every document sent once per pass
    assert all(r.schema_format.get("strict") is True for r in server.requests)
    cards = TopicStore(db).topics_for_channel(CHANNEL)
    assert sorted(c.title for c in cards) == ["All about COOKING", "All about FOOTBALL", "All about ROCKETS"]
    for card in cards:
        assert card.kind == "cluster" and 2 <= len(card.anchors) <= 3
        assert [a.score for a in card.anchors] == sorted((a.score for a in card.anchors), reverse=True)
        assert card.topic_id == f"topic:{card.anchors[0].source_ref}"
        bundle = TopicStore(db).get_bundle(card.topic_id)
        assert bundle.items and all(i.score >= 0.5 for i in bundle.items)
        assert not {i.source_ref for i in bundle.items} & {a.source_ref for a in card.anchors}
    counts = ProcessingStore(db).get_run("r1").counts
    assert counts["topics"] == 3 and counts["documents"] == 60
    assert counts["documents_covered"] + counts["documents_not_covered"] == 60
    assert counts["input_tokens"] > 0 and report.ok


@pytest.mark.slow
def test_same_answers_give_same_ids_and_identical_files(db, settings, server, tmp_path):
    seed(db)
    topicize(db, llm_strategy(settings, server), TopicGates(), run_id="a")
    export(db, tmp_path / "a")
    first = [c.topic_id for c in TopicStore(db).all_topics()]
    topicize(db, llm_strategy(settings, server), TopicGates(), run_id="b", force=True)
    export(db, tmp_path / "b")
    assert [c.topic_id for c in TopicStore(db).all_topics()] == first
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    for entry in map(
        json.loads, (tmp_path / "a" / "kb_entries.ndjson").read_text(encoding="utf-8").split("\n")[:-1]
    ):
        jsonschema.validate(entry, load_schema(schema_for_entry(entry)))


def test_stale_topics_are_removed_and_unchanged_channels_skipped(db, settings, server):
    seed(db)
    topicize(db, llm_strategy(settings, server), TopicGates(), run_id="a")
    old = {c.topic_id for c in TopicStore(db).topics_for_channel(CHANNEL)}
    skipped = topicize(db, llm_strategy(settings, server), TopicGates(), run_id="b")
    assert [c.status for c in skipped.channels] == ["skipped"]
    server.handlers["topics"] = lambda r: {
        "topics": [t for t in topics_handler(r)["topics"] if "ROCKETS" in t["title"]]
    }
    topicize(db, llm_strategy(settings, server), TopicGates(), run_id="c", force=True)
    now = {c.topic_id for c in TopicStore(db).topics_for_channel(CHANNEL)}
    assert len(now) == 1 and now < old
    for gone in old - now:
        assert TopicStore(db).get_topic(gone) is None and TopicStore(db).get_bundle(gone) is None


def test_anchors_outside_the_corpus_are_rejected(db, settings, server):
    seed(db, count=6)

    def invented(request: LlmRequest) -> dict:
        return {
            "topics": [
                {
                    "title": "Ghost",
                    "summary": "",
                    "tags": [],
                    "anchors": [
                        {"source_ref": "tg:1:post:999", "score": 1.0},
                        {"source_ref": "tg:1:post:998", "score": 0.9},
                    ],
                },
                {
                    "title": "Real",
                    "summary": "",
                    "tags": [],
                    "anchors": [
                        {"source_ref": f"tg:{CHANNEL}:post:1", "score": 0.9},
                        {"source_ref": f"tg:{CHANNEL}:post:2", "score": 0.8},
                        {"source_ref": "tg:1:post:997", "score": 0.95},
                    ],
                },
            ]
        }

    server.handlers["topics"] = invented
    report = topicize(db, llm_strategy(settings, server, batch_tokens=6000), TopicGates(), run_id="r")
    cards = TopicStore(db).topics_for_channel(CHANNEL)
    assert [c.title for c in cards] == ["Real"]
    assert [a.source_ref for a in cards[0].anchors] == [f"tg:{CHANNEL}:post:1", f"tg:{CHANNEL}:post:2"]
    assert report.counts()["rejected_anchors"] == 3


def test_gates():
    lengths = {
        "tg:1:post:1": 400,
        "tg:1:post:2": 100,
        "tg:1:post:3": 50,
        "tg:1:post:4": 50,
        "tg:1:post:5": 50,
    }
    gates = TopicGates()
    topics, _ = apply_gates(
        [
            Candidate("long single", anchors=[Anchor(source_ref="tg:1:post:1", score=0.8)]),
            Candidate("short single", anchors=[Anchor(source_ref="tg:1:post:2", score=0.99)]),
            Candidate("weak single", anchors=[Anchor(source_ref="tg:1:post:1", score=0.7)]),
            Candidate(
                "cluster",
                anchors=[Anchor(source_ref=f"tg:1:post:{i}", score=0.9 - i / 100) for i in (2, 3, 4, 5)],
            ),
            Candidate(
                "weak cluster",
                anchors=[
                    Anchor(source_ref="tg:1:post:3", score=0.65),
                    Anchor(source_ref="tg:1:post:4", score=0.5),
                ],
            ),
        ],
        lengths,
        gates,
    )
    by_title = {t.title: t for t in topics}
    assert set(by_title) == {"long single", "cluster"}
    assert by_title["long single"].kind == "singleton"
    assert [a.source_ref for a in by_title["cluster"].anchors] == [
        "tg:1:post:2",
        "tg:1:post:3",
        "tg:1:post:4",
    ]


def test_one_failing_channel_does_not_stop_the_others(db, settings, server):
    seed(db, channel=CHANNEL, count=9)
    seed(db, channel=OTHER, count=9)
    server.on(f"tg:{OTHER}:", error(400, "bad request"))
    report = topicize(db, llm_strategy(settings, server, batch_tokens=6000), TopicGates(), run_id="r")
    status = {c.channel_id: c.status for c in report.channels}
    assert status == {CHANNEL: "ok", OTHER: "failed"}
    assert TopicStore(db).topics_for_channel(CHANNEL)
    assert ProcessingStore(db).get_run("r").status == "partial"


def test_extractive_strategy_uses_shared_hashtags_and_engagement(db):
    seed(db, count=30, hashtags=True)
    topicize(db, ExtractiveTopicStrategy(min_documents=3), TopicGates(), run_id="x")
    cards = {c.title: c for c in TopicStore(db).topics_for_channel(CHANNEL)}
    assert set(cards) == {"#rockets", "#cooking", "#football"}
    rockets = cards["#rockets"]
    # Posts 30, 27, 24 … carry #rockets (i % 3 == 0); engagement = views + 10 * forwards.
    assert [a.source_ref for a in rockets.anchors] == [f"tg:{CHANNEL}:post:{i}" for i in (30, 27, 24)]
    assert rockets.model == "extractive"
    assert len(TopicStore(db).get_bundle(rockets.topic_id).items) == 7


def test_topicize_cli_extractive_json(settings, db):
    seed(db, count=12, hashtags=True)
    env = db_env(settings)
    result = CliRunner().invoke(cli, ["topicize", "--processor", "extractive", "--json"], env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["topics"] == 3 and data["strategy"] == "extractive" and data["ok"] is True
