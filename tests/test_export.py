"""Export on both dialects: schema-valid records, filters, links, determinism, atomic files."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest

from tg_parser.domain.models import (
    Anchor,
    ProcessedDocument,
    RawMessage,
    Source,
    SupportingItem,
    TopicBundle,
    TopicCard,
)
from tg_parser.export import ExportFilters, export, make_title, topic_file_name
from tg_parser.export.validation import load_schema, schema_for_entry
from tg_parser.stores import IngestionStore, ProcessingStore, RawStore

PUBLIC, PRIVATE = 1001, 2002
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _seed(db) -> dict[str, str]:
    IngestionStore(db).add_source(Source(source_id="pub", channel_id=PUBLIC, username="public_chan"))
    IngestionStore(db).add_source(Source(source_id="priv", channel_id=PRIVATE, title="Private"))
    raw, proc = RawStore(db), ProcessingStore(db)
    messages, docs = [], []
    for channel in (PUBLIC, PRIVATE):
        for i in range(1, 6):
            date = T0 + timedelta(days=i)
            messages.append(
                RawMessage.build(
                    channel_id=channel,
                    message_type="post",
                    message_id=i,
                    date=date,
                    text=f"post {i}",
                    replies=1,
                )
            )
            docs.append(
                ProcessedDocument(
                    source_ref=f"tg:{channel}:post:{i}",
                    channel_id=channel,
                    message_date=date,
                    processed_at=T0 + timedelta(days=30 - i),  # processing order differs from message order
                    text_clean=f"Post number {i} about rockets. More text here.",
                    summary=f"Summary {i}. Second sentence.",
                    topics=["rockets"],
                    entities=[{"type": "org", "value": "NASA", "confidence": 0.9}],
                    language="en",
                    model="m",
                    prompt_id="p",
                    pipeline_version="1",
                )
            )
    # A comment under post 2 of the public channel (comment id in the discussion group's id space).
    messages.append(
        RawMessage.build(
            channel_id=PUBLIC,
            message_type="comment",
            message_id=900,
            date=T0 + timedelta(days=2, hours=1),
            text="nice",
            thread_id=2,
        )
    )
    docs.append(
        ProcessedDocument(
            source_ref=f"tg:{PUBLIC}:comment:900",
            channel_id=PUBLIC,
            message_date=T0 + timedelta(days=2, hours=1),
            text_clean="nice",
            summary="",
            model="m",
            prompt_id="p",
            pipeline_version="1",
        )
    )
    raw.store_batch(messages)
    proc.upsert_documents(docs)
    card = TopicCard(
        topic_id=f"topic:tg:{PUBLIC}:post:1",
        channel_id=PUBLIC,
        title="Rockets",
        summary="Everything about rockets.",
        anchors=[
            Anchor(source_ref=f"tg:{PUBLIC}:post:1", score=0.9),
            Anchor(source_ref=f"tg:{PUBLIC}:post:2", score=0.8),
        ],
        tags=["space"],
        updated_at=T0,
        created_at=T0,
    )
    bundle = TopicBundle(
        topic_id=card.topic_id,
        channel_id=PUBLIC,
        items=[SupportingItem(source_ref=f"tg:{PUBLIC}:post:3", score=0.6)],
        updated_at=T0,
    )
    proc.replace_channel_topics(PUBLIC, [card], [bundle])
    return {"topic": card.topic_id}


def _read(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "kb_entries.ndjson").read_text(encoding="utf-8").splitlines()]


def _validate_all(out: Path) -> None:
    for entry in _read(out):
        jsonschema.validate(entry, load_schema(schema_for_entry(entry)))
    jsonschema.validate(json.loads((out / "topics.json").read_text()), load_schema("topics"))
    for path in out.glob("topic_*.json"):
        jsonschema.validate(json.loads(path.read_text()), load_schema("topic_file"))


def test_full_export_validates_and_links(db, tmp_path):
    ids = _seed(db)
    result = export(db, tmp_path / "out")
    out = tmp_path / "out"
    _validate_all(out)
    entries = _read(out)
    messages = [e for e in entries if e["type"] == "message"]
    topics = [e for e in entries if e["type"] == "topic"]
    assert result.message_entries == len(messages) == 11
    assert [t["topic_id"] for t in topics] == [ids["topic"]]
    by_ref = {e["source_ref"]: e for e in messages}
    assert by_ref[f"tg:{PUBLIC}:post:3"]["url"] == "https://t.me/public_chan/3"
    assert by_ref[f"tg:{PRIVATE}:post:3"]["url"] == f"https://t.me/c/{PRIVATE}/3"
    assert by_ref[f"tg:{PUBLIC}:comment:900"]["url"] == "https://t.me/public_chan/2?comment=900"
    assert by_ref[f"tg:{PUBLIC}:post:1"]["topic_ids"] == [ids["topic"]]
    assert by_ref[f"tg:{PUBLIC}:post:3"]["topic_ids"] == [ids["topic"]]  # supporting item
    assert by_ref[f"tg:{PUBLIC}:post:4"]["topic_ids"] == []
    assert by_ref[f"tg:{PUBLIC}:post:1"]["title"] == "Summary 1."
    assert by_ref[f"tg:{PUBLIC}:post:1"]["message_date"] == "2025-03-02T12:00:00.000000Z"
    # Deterministic order: channel, then message date (not processing time).
    keys = [(e["channel_id"], e["message_date"], e["source_ref"]) for e in messages]
    assert keys == sorted(keys)
    topic_file = json.loads((out / topic_file_name(ids["topic"])).read_text())
    assert [s["role"] for s in topic_file["sources"]] == ["anchor", "anchor", "supporting"]
    listing = json.loads((out / "topics.json").read_text())["topics"]
    assert listing[0]["supporting_count"] == 1 and listing[0]["file"] == topic_file_name(ids["topic"])


def test_export_is_byte_identical_twice(db, tmp_path):
    _seed(db)
    export(db, tmp_path / "a")
    export(db, tmp_path / "b")
    for name in ("kb_entries.ndjson", "topics.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(
        p.name for p in (tmp_path / "b").iterdir()
    )


def test_filters_by_channel_topic_and_message_date(db, tmp_path):
    ids = _seed(db)
    export(db, tmp_path / "c", ExportFilters(channel_id=PRIVATE))
    assert {e["channel_id"] for e in _read(tmp_path / "c")} == {PRIVATE}
    export(db, tmp_path / "t", ExportFilters(topic_id=ids["topic"]))
    refs = [e["source_ref"] for e in _read(tmp_path / "t") if e["type"] == "message"]
    assert refs == [f"tg:{PUBLIC}:post:1", f"tg:{PUBLIC}:post:2", f"tg:{PUBLIC}:post:3"]
    # The window is on the message date: days 2..3 only (processing times are all outside it).
    export(db, tmp_path / "d", ExportFilters(since=T0 + timedelta(days=2), until=T0 + timedelta(days=3)))
    dated = [e for e in _read(tmp_path / "d") if e["type"] == "message"]
    assert sorted(e["message_id"] for e in dated) == [2, 2, 900]
    _validate_all(tmp_path / "d")


def test_failed_export_leaves_previous_files_untouched(db, tmp_path):
    _seed(db)
    out = tmp_path / "out"
    export(db, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = {"n": 0}

    def explode() -> None:
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        export(db, out, on_entry=explode)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_stale_topic_files_are_removed_and_foreign_files_kept(db, tmp_path):
    ids = _seed(db)
    out = tmp_path / "out"
    export(db, out)
    (out / "topic_notes.json").write_text("{}")  # not written by tg-parser: never touched
    ProcessingStore(db).replace_channel_topics(PUBLIC, [], [])  # the topic is gone
    result = export(db, out)
    assert result.removed_files == [topic_file_name(ids["topic"])]
    assert not (out / topic_file_name(ids["topic"])).exists()
    assert (out / "topic_notes.json").exists()


def test_topic_ids_only_name_topics_in_the_same_export(db, tmp_path):
    ids = _seed(db)
    # Day 3 holds only the supporting post 3; the topic's anchors (posts 1 and 2) are outside.
    export(db, tmp_path / "d", ExportFilters(since=T0 + timedelta(days=3), until=T0 + timedelta(days=4)))
    entries = _read(tmp_path / "d")
    assert not [e for e in entries if e["type"] == "topic"]
    assert all(e["topic_ids"] == [] for e in entries)
    # With an anchor inside the window the topic comes along, and is named by its members.
    export(db, tmp_path / "e", ExportFilters(since=T0 + timedelta(days=1), until=T0 + timedelta(days=4)))
    entries = _read(tmp_path / "e")
    assert [e["topic_id"] for e in entries if e["type"] == "topic"] == [ids["topic"]]
    named = {t for e in entries if e["type"] == "message" for t in e["topic_ids"]}
    assert named == {ids["topic"]}


def test_unwritable_folder_is_one_clear_error(db, tmp_path):
    from tg_parser.export.writer import ExportError

    _seed(db)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ExportError, match="cannot create the export folder"):
        export(db, blocker / "sub")


@pytest.mark.parametrize(
    ("summary", "text", "expected"),
    [
        ("First. Second.", "x", "First."),
        ("", "Only text here! And more", "Only text here!"),
        (None, "word " * 60, ("word " * 24).strip() + "…"),
    ],
)
def test_make_title(summary, text, expected):
    assert make_title(summary, text) == expected
