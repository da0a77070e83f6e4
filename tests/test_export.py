"""Export on both dialects: schema-valid records, filters, links, determinism, atomic files."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import orjson
import pytest
from conftest import pg_settings, sqlite_settings

from tg_parser.db.codec import format_timestamp
from tg_parser.db.connect import open_database
from tg_parser.domain.models import (
    Anchor,
    Entity,
    ProcessedDocument,
    RawMessage,
    Source,
    SupportingItem,
    TopicBundle,
    TopicCard,
)
from tg_parser.export import ExportFilters, export, make_title, topic_file_name, writer
from tg_parser.export.validation import load_schema, schema_for_entry
from tg_parser.export.writer import _SENTENCE_END, TITLE_MAX, _JsonColumn
from tg_parser.stores import IngestionStore, ProcessingStore, RawStore
from tg_parser.stores.topics import TopicStore

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
            processed_at=T0,
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
    TopicStore(db).replace_channel_topics(PUBLIC, [card], [bundle])
    return {"topic": card.topic_id}


def _read(out: Path) -> list[dict]:
    # Split on "\n" only: str.splitlines() would also split at U+2028 and friends, which JSON leaves raw.
    lines = (out / "kb_entries.ndjson").read_bytes().split(b"\n")
    assert lines[-1] == b""
    return [json.loads(line) for line in lines[:-1]]


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
    TopicStore(db).replace_channel_topics(PUBLIC, [], [])  # the topic is gone
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


# --- exact bytes on hostile data ---------------------------------------------------------------------

# Everything JSON must escape or must not: quotes, backslashes, control characters, DEL, line and
# paragraph separators, astral characters, and the Unicode spaces Python's str.strip() removes.
HOSTILE = 'q"uote back\\slash \x01\x1f\x7f\ttab\nnl\rcr \u2028\u2029 😀 nb\xa0sp \u3000é'


def _seed_hostile(db) -> list[tuple[RawMessage, ProcessedDocument, str | None]]:
    """Documents covering every branch of a message entry; returns them with their channel's username."""
    IngestionStore(db).add_source(Source(source_id="pub", channel_id=PUBLIC, username="public_chan"))
    IngestionStore(db).add_source(Source(source_id="priv", channel_id=PRIVATE, title="Private"))
    cases: list[tuple[dict, dict]] = [
        ({}, {"summary": None, "text_clean": HOSTILE + ". Second sentence"}),  # title from the text
        ({}, {"summary": "\u3000 \xa0", "text_clean": "Blank summary. Title from here"}),
        ({}, {"summary": "\u2003Same text.\n", "text_clean": "Same text."}),  # content is the text alone
        ({"views": None, "forwards": None, "replies": None}, {"summary": HOSTILE, "language": ""}),
        ({"media_type": "photo", "source_id": "pub"}, {"summary": "word " * 40, "language": "ru"}),
        ({"edit_date": T0 + timedelta(hours=5, microseconds=7)}, {"summary": "x" * 200}),
        ({"message_type": "comment", "thread_id": 3}, {"summary": "A comment! On post 3"}),
        ({"message_type": "comment", "thread_id": None}, {"summary": "No post known? Still a link"}),
        ({"parent_message_id": 4, "views": 0}, {"summary": "Ends with an ellipsis… Then more"}),
    ]
    messages, docs, seeded = [], [], []
    for channel, username in ((PUBLIC, "public_chan"), (PRIVATE, None)):
        for i, (raw_fields, doc_fields) in enumerate(cases, start=1):
            raw_fields = {"message_type": "post", "views": i * 10, "forwards": 1, "replies": 2} | raw_fields
            date = T0 + timedelta(hours=i, microseconds=i)
            message = RawMessage.build(
                channel_id=channel, message_id=100 + i, date=date, text="raw " + HOSTILE, **raw_fields
            )
            doc = ProcessedDocument(
                source_ref=message.source_ref,
                channel_id=channel,
                message_date=date,
                processed_at=T0 + timedelta(days=40, seconds=i),
                text_clean="Body text " + HOSTILE,
                topics=["ракеты", HOSTILE],
                # Keys in jsonb's order (shorter first), so both dialects store them alike.
                entities=[Entity(type="org", value=HOSTILE, confidence=0.25)],
                language="en",
                model="m " + HOSTILE,
                prompt_id="p",
                pipeline_version="1",
            ).model_copy(update=doc_fields)
            messages.append(message)
            docs.append(doc)
            seeded.append((message, doc, username))
    RawStore(db).store_batch(messages)
    ProcessingStore(db).upsert_documents(docs)
    return seeded


def _expected_line(message: RawMessage, doc: ProcessedDocument, username: str | None) -> bytes:
    """The entry as the documented rules build it, independently of the writer's fast path."""
    summary = doc.summary or ""
    text = doc.text_clean
    base = f"https://t.me/{username}" if username else f"https://t.me/c/{message.channel_id}"
    if message.message_type == "post":
        url = f"{base}/{message.message_id}"
    else:
        url = (
            base if message.thread_id is None else f"{base}/{message.thread_id}?comment={message.message_id}"
        )
    entry = {
        "id": "kb:msg:" + doc.source_ref,
        "type": "message",
        "source_ref": doc.source_ref,
        "channel_id": message.channel_id,
        "channel_username": username,
        "message_type": message.message_type,
        "message_id": message.message_id,
        "title": make_title(summary, text),
        "content": f"{summary}\n\n{text}" if summary and summary.strip() != text.strip() else text,
        "summary": summary,
        "topics": doc.topics,
        "topic_ids": [],
        "entities": [e.model_dump() for e in doc.entities],
        "language": doc.language or "und",
        "url": url,
        "message_date": format_timestamp(doc.message_date),
        "metadata": {
            "model": doc.model,
            "prompt_id": doc.prompt_id,
            "pipeline_version": doc.pipeline_version,
            "processed_at": format_timestamp(doc.processed_at),
            "edit_date": format_timestamp(message.edit_date) if message.edit_date else None,
            "thread_id": message.thread_id,
            "parent_message_id": message.parent_message_id,
            "views": message.views,
            "forwards": message.forwards,
            "replies": message.replies,
            "media_type": message.media_type,
            "source_id": message.source_id,
        },
    }
    return orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)


def test_hostile_documents_export_byte_for_byte(db, tmp_path):
    seeded = _seed_hostile(db)
    export(db, tmp_path / "out")
    data = (tmp_path / "out" / "kb_entries.ndjson").read_bytes()
    lines = [line + b"\n" for line in data.split(b"\n")[:-1]]
    order = sorted(seeded, key=lambda s: (s[1].channel_id, s[1].message_date, s[1].source_ref))
    assert lines == [_expected_line(*s) for s in order]
    _validate_all(tmp_path / "out")
    by_ref = {e["source_ref"]: e for e in _read(tmp_path / "out")}
    blank = by_ref[f"tg:{PUBLIC}:post:102"]
    assert blank["title"] == "Blank summary." and blank["content"].startswith("\u3000 \xa0\n\n")
    assert by_ref[f"tg:{PUBLIC}:post:103"]["content"] == "Same text."
    assert by_ref[f"tg:{PRIVATE}:comment:108"]["url"] == f"https://t.me/c/{PRIVATE}"


def test_export_bytes_are_the_same_on_both_dialects(sqlite_dir, pg_dbname, tmp_path):
    outputs = []
    for name, settings in (("sqlite", sqlite_settings(sqlite_dir)), ("postgres", pg_settings(pg_dbname))):
        db = open_database(settings)
        try:
            _seed(db)
            _seed_hostile(db)
            export(db, tmp_path / name)
        finally:
            db.close()
        outputs.append({p.name: p.read_bytes() for p in sorted((tmp_path / name).iterdir())})
    assert outputs[0] == outputs[1]


def _title_by_split(summary: str | None, text: str) -> str:
    """make_title as first written (re.split, then strip and collapse): the reference for the faster one."""
    source = (summary or "").strip() or text.strip()
    first = _SENTENCE_END.split(source, maxsplit=1)[0].strip() if source else ""
    first = " ".join(first.split())
    if len(first) > TITLE_MAX:
        cut = first[:TITLE_MAX].rsplit(" ", 1)[0] or first[:TITLE_MAX]
        first = cut.rstrip(",;:-–— ") + "…"
    return first or "(untitled)"


@pytest.mark.parametrize(
    "summary",
    [
        None,
        "",
        " \u3000 ",
        "One. Two.",
        "One.\u2003Two",
        "Why?\n\nBecause",
        "Wait…  what",
        "No end at all",
        "Dots...  many",
        "trailing. ",
        ".\tLeading dot",
        "a" * 130,
        ("word " * 30) + ". End",
        "x, " * 50,
        HOSTILE,
    ],
)
def test_make_title_matches_the_split_rule(summary):
    for text in ("Fallback text. More", "   ", HOSTILE):
        assert make_title(summary, text) == _title_by_split(summary, text)


@pytest.mark.parametrize(
    "value",
    [
        [],
        {},
        ["ракеты", HOSTILE],
        [{"type": "org", "value": HOSTILE, "confidence": 0.25}],
        {"a": [1, -2.5, 1e300, None, True, False], "nested": {"k": "v, : \\"}, "": ""},
        [2**63 - 1, -(2**63)],
    ],
)
def test_json_columns_embed_the_bytes_orjson_prints(value):
    # jsonb's rendering (spaces after separators) as PostgreSQL sends it embeds exactly as the parsed
    # value would print inside an entry: remembered or not.
    jsonb_text = json.dumps(value, ensure_ascii=False)
    expected = orjson.dumps({"v": value})
    column = _JsonColumn()
    assert orjson.dumps({"v": column.render(jsonb_text)}) == expected
    assert orjson.dumps({"v": column.render(jsonb_text)}) == expected  # the remembered rendering
    assert list(column.known) == [jsonb_text]
    assert orjson.dumps({"v": writer._json_value(jsonb_text)}) == expected  # not remembering
    # A value orjson refuses to parse (a number beyond a double, which jsonb's numeric holds) is parsed
    # by the stdlib and handed back as it was before the cache, for the entry's print to treat alike.
    assert column.render("[1e400]") == [float("inf")] and "[1e400]" not in column.known
    assert orjson.dumps({"v": column.render("[1e400]")}) == b'{"v":[null]}'


def test_json_columns_forget_past_their_bound(monkeypatch):
    monkeypatch.setattr(writer, "_JSON_CACHE_MAX", 3)
    column = _JsonColumn()
    for i in range(10):
        assert orjson.dumps(column.render(f'["t{i}", {i}]')) == f'["t{i}",{i}]'.encode()
        assert len(column.known) <= 3


def test_json_columns_stop_remembering_values_that_do_not_repeat(monkeypatch):
    monkeypatch.setattr(writer, "_JSON_RETRY_BATCHES", 2)
    repeating, unique = _JsonColumn(), _JsonColumn()
    states = []
    for batch in range(12):
        for i in range(100):
            repeating.render(f'["t{i % 10}"]')
            unique.render(f'["u{batch}-{i}"]')
        repeating.review(100)
        unique.review(100)
        # Values that repeat keep being remembered.
        assert repeating.caching and len(repeating.known) == 10
        states.append(unique.caching)
    # Off after the 1st batch, tried again 2 batches later, then 4 batches later (each try that does
    # not pay doubles the rest).
    assert states == [False, False, True, False, False, False, False, True, False, False, False, False]
    # Remembered only while remembering: the 1st, 4th and 9th batches.
    assert len(unique.known) == 300
    assert '["u3-0"]' in unique.known and '["u8-0"]' in unique.known
    assert '["u1-0"]' not in unique.known and '["u11-0"]' not in unique.known


def test_export_bytes_do_not_depend_on_the_json_cache(db, tmp_path, monkeypatch):
    _seed(db)
    _seed_hostile(db)
    export(db, tmp_path / "cached")
    monkeypatch.setattr(writer, "_JSON_CACHE_MAX", 1)  # every value printed anew
    export(db, tmp_path / "uncached")
    for name in ("kb_entries.ndjson", "topics.json"):
        assert (tmp_path / "cached" / name).read_bytes() == (tmp_path / "uncached" / name).read_bytes()


def test_a_batch_remembers_a_bounded_number_of_new_json_values(monkeypatch):
    monkeypatch.setattr(writer, "_JSON_MISSES_PER_BATCH", 10)
    column = _JsonColumn()
    rendered = [column.render(f'["u{i}", {i}]') for i in range(100)]
    assert [orjson.dumps(r) for r in rendered] == [f'["u{i}",{i}]'.encode() for i in range(100)]
    assert len(column.known) == 10  # the rest parsed only
    column.review(1000)  # 1% misses, but the batch's budget is spent: remembering stops
    assert not column.caching
