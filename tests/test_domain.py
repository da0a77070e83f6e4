"""Domain rules (DESIGN.md §4.3–4.4): ids, records, channel references, the raw_payload cap.

Pure Python: no database, so these run once (not per dialect).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from tg_parser.db.codec import dump_json_bytes
from tg_parser.domain.channels import ChannelRef, parse_channel_ref
from tg_parser.domain.ids import (
    SourceRef,
    doc_id,
    is_source_ref,
    kb_message_id,
    kb_topic_id,
    make_source_ref,
    parse_source_ref,
    topic_id,
)
from tg_parser.domain.models import (
    Anchor,
    Entity,
    IngestRun,
    ProcessedDocument,
    RawMessage,
    RunReport,
    Source,
    TopicCard,
    sort_anchors,
)
from tg_parser.domain.payload import PAYLOAD_CAP_BYTES, cap_payload, payload_size

T0 = datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)

# --- ids --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel_id", "kind", "message_id", "expected"),
    [
        (1234567890, "post", 1, "tg:1234567890:post:1"),
        (1234567890, "comment", 987654, "tg:1234567890:comment:987654"),
        # Export files and old ids can carry a negative (Bot-API style) channel id; it must round-trip.
        (-1001234567890, "post", 42, "tg:-1001234567890:post:42"),
        (2**62, "post", 2**31, f"tg:{2**62}:post:{2**31}"),
    ],
)
def test_source_ref_round_trips(channel_id: int, kind: str, message_id: int, expected: str) -> None:
    ref = make_source_ref(channel_id, kind, message_id)  # type: ignore[arg-type]
    assert ref == expected
    parsed = parse_source_ref(ref)
    assert parsed == SourceRef(channel_id, kind, message_id)  # type: ignore[arg-type]
    assert str(parsed) == ref
    assert isinstance(parsed.channel_id, int) and isinstance(parsed.message_id, int)
    assert is_source_ref(ref)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((1, "reply", 5), "message_type"),
        ((1, "POST", 5), "message_type"),
        ((1, "post", 0), "message_id"),
        ((1, "post", -3), "message_id"),
        ((1, "post", True), "message_id"),  # bool is an int subclass; never a message id
        ((True, "post", 3), "channel_id"),
        (("123", "post", 3), "channel_id"),
        ((1.0, "post", 3), "channel_id"),
        ((1, "post", "7"), "message_id"),
    ],
)
def test_make_source_ref_rejects_bad_parts(args: tuple, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        make_source_ref(*args)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "tg:1:post",
        "tg:1:post:",
        "tg::post:1",
        "tg:abc:post:1",
        "tg:1:reply:1",
        "tg:1:post:-1",
        "tg:1:post:1:extra",
        "TG:1:post:1",
        " tg:1:post:1",
        "tg:1:post:1 ",
        "tg:1:post:1\n",
        "doc:tg:1:post:1",
        "tg:1.5:post:1",
        "tg:1:post:0x10",
    ],
)
def test_parse_source_ref_rejects_malformed(value: str) -> None:
    assert not is_source_ref(value)
    with pytest.raises(ValueError, match="not a source_ref"):
        parse_source_ref(value)


def test_derived_ids() -> None:
    ref = "tg:-1001:comment:77"
    assert doc_id(ref) == "doc:tg:-1001:comment:77"
    assert topic_id(ref) == "topic:tg:-1001:comment:77"
    assert kb_message_id(ref) == "kb:msg:tg:-1001:comment:77"
    assert kb_topic_id(topic_id(ref)) == "kb:topic:topic:tg:-1001:comment:77"


@pytest.mark.parametrize("builder", [doc_id, topic_id, kb_message_id])
def test_derived_ids_refuse_something_that_is_not_a_source_ref(builder) -> None:
    with pytest.raises(ValueError):
        builder("doc:tg:1:post:1")
    with pytest.raises(ValueError):
        builder("1:post:1")


def test_kb_topic_id_needs_a_topic_id() -> None:
    with pytest.raises(ValueError, match="not a topic id"):
        kb_topic_id("tg:1:post:1")


# --- records ----------------------------------------------------------------------------------------


def test_naive_datetimes_are_rejected_everywhere() -> None:
    naive = datetime(2025, 1, 2, 3, 4, 5)
    with pytest.raises(ValidationError, match="timezone-aware"):
        RawMessage.build(channel_id=1, message_type="post", message_id=1, date=naive)
    with pytest.raises(ValidationError, match="timezone-aware"):
        Source(source_id="s", since_date=naive)
    with pytest.raises(ValidationError, match="timezone-aware"):
        IngestRun(source_id="s", run_id="r", started_at=naive)
    with pytest.raises(ValidationError, match="timezone-aware"):
        RunReport(run_id="r", kind="ingest", started_at=naive)
    source = Source(source_id="s")
    with pytest.raises(ValidationError, match="timezone-aware"):
        source.last_attempt_at = naive  # validate_assignment: a later assignment is checked too


def test_aware_datetimes_are_normalised_to_utc() -> None:
    moscow = timezone(timedelta(hours=3))
    message = RawMessage.build(
        channel_id=1, message_type="post", message_id=1, date=datetime(2025, 1, 2, 6, 0, tzinfo=moscow)
    )
    assert message.date == datetime(2025, 1, 2, 3, 0, tzinfo=UTC)
    assert message.date.utcoffset() == timedelta(0)
    assert message.inserted_at.tzinfo is not None


def test_raw_message_ref_must_match_its_parts() -> None:
    good = RawMessage.build(channel_id=10, message_type="comment", message_id=5, date=T0)
    assert good.source_ref == "tg:10:comment:5"
    for field, value in (("channel_id", 11), ("message_type", "post"), ("message_id", 6)):
        fields = {
            "source_ref": "tg:10:comment:5",
            "channel_id": 10,
            "message_type": "comment",
            "message_id": 5,
            "date": T0,
        }
        fields[field] = value
        with pytest.raises(ValidationError, match="does not match"):
            RawMessage(**fields)
    with pytest.raises(ValidationError, match="not a source_ref"):
        RawMessage(source_ref="x", channel_id=10, message_type="post", message_id=5, date=T0)


def test_records_refuse_unknown_fields() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Source(source_id="s", chanel_id=5)  # a typo must not be dropped silently


def test_source_window_and_id() -> None:
    with pytest.raises(ValidationError, match="since_date is after until_date"):
        Source(source_id="s", since_date=T0, until_date=T0 - timedelta(days=1))
    with pytest.raises(ValidationError):
        Source(source_id="")
    with pytest.raises(ValidationError):
        Source(source_id="s", status="deleted")
    same_day = Source(source_id="s", since_date=T0, until_date=T0)
    assert same_day.since_date == same_day.until_date


def _document(**fields: object) -> ProcessedDocument:
    base: dict[str, object] = {
        "source_ref": "tg:5:post:9",
        "channel_id": 5,
        "message_date": T0,
        "text_clean": "hello",
        "model": "m",
        "prompt_id": "p1",
        "pipeline_version": "1",
    }
    base.update(fields)
    return ProcessedDocument(**base)  # type: ignore[arg-type]


def test_processed_document_id_is_derived_from_source_ref() -> None:
    assert _document().id == "doc:tg:5:post:9"
    assert _document(id="doc:tg:5:post:9").id == "doc:tg:5:post:9"
    with pytest.raises(ValidationError, match="document id must be"):
        _document(id="doc:tg:5:post:10")
    with pytest.raises(ValidationError, match="not a source_ref"):
        _document(source_ref="tg:5:post")
    with pytest.raises(ValidationError):
        _document(text_clean="")


def test_processed_document_serialises_for_a_store() -> None:
    doc = _document(entities=[Entity(type="org", value="ACME", confidence=0.9)], topics=["a", "b"])
    row = doc.to_row()
    assert row["id"] == "doc:tg:5:post:9"
    assert row["entities"] == [{"type": "org", "value": "ACME", "confidence": 0.9}]
    assert json.loads(doc.model_dump_json())["message_date"].startswith("2025-01-02T03:04:05.123456")
    with pytest.raises(ValidationError):
        Entity(type="org", value="x", confidence=1.5)


def test_sort_anchors_dedupes_keeping_best_score_and_orders_score_desc_ref_asc() -> None:
    anchors = [
        Anchor(source_ref="tg:1:post:3", score=0.5),
        Anchor(source_ref="tg:1:post:2", score=0.9),
        Anchor(source_ref="tg:1:post:10", score=0.5),
        Anchor(source_ref="tg:1:post:3", score=0.7),  # duplicate: the higher score wins
        Anchor(source_ref="tg:1:post:1", score=0.5),
        Anchor(source_ref="tg:1:post:2", score=0.1),  # duplicate with a lower score: ignored
    ]
    ordered = sort_anchors(anchors)
    assert [(a.source_ref, a.score) for a in ordered] == [
        ("tg:1:post:2", 0.9),
        ("tg:1:post:3", 0.7),
        # Equal scores: ref ascending, compared as text.
        ("tg:1:post:1", 0.5),
        ("tg:1:post:10", 0.5),
    ]
    # Deterministic: any input order gives the same result.
    assert sort_anchors(list(reversed(anchors))) == ordered
    assert sort_anchors([]) == []


def test_topic_card_requires_scored_anchors() -> None:
    card = TopicCard(
        topic_id="topic:tg:1:post:2",
        channel_id=1,
        title="t",
        anchors=[Anchor(source_ref="tg:1:post:2", score=1.0)],
    )
    assert card.to_row()["anchors"] == [{"source_ref": "tg:1:post:2", "score": 1.0}]
    with pytest.raises(ValidationError):
        Anchor(source_ref="tg:1:post:2", score=-0.1)


# --- channel references -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@durov", ChannelRef(username="durov")),
        ("durov", ChannelRef(username="durov")),
        ("  @Some_Channel_1  ", ChannelRef(username="Some_Channel_1")),
        ("t.me/durov", ChannelRef(username="durov")),
        ("https://t.me/durov", ChannelRef(username="durov")),
        ("http://www.t.me/durov/", ChannelRef(username="durov")),
        ("https://t.me/durov/123", ChannelRef(username="durov")),
        ("https://t.me/durov?start=x", ChannelRef(username="durov")),
        ("https://t.me/s/durov", ChannelRef(username="durov")),
        ("https://telegram.me/durov", ChannelRef(username="durov")),
        ("https://t.me/c/1234567890/45", ChannelRef(channel_id=1234567890)),
        ("1234567890", ChannelRef(channel_id=1234567890)),
        ("-1001234567890", ChannelRef(channel_id=1234567890)),
    ],
)
def test_parse_channel_ref_accepts(text: str, expected: ChannelRef) -> None:
    assert parse_channel_ref(text) == expected


def test_default_source_id() -> None:
    assert parse_channel_ref("@Durov").default_source_id() == "durov"
    assert parse_channel_ref("-1001234567890").default_source_id() == "1234567890"


@pytest.mark.parametrize(
    "link", ["https://t.me/+AbCdEf123", "t.me/+AbCdEf123", "https://t.me/joinchat/AbCdEf123"]
)
def test_invite_links_are_rejected_with_what_to_do(link: str) -> None:
    with pytest.raises(ValueError, match="invite link") as caught:
        parse_channel_ref(link)
    assert "@username or numeric id" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("-12345", "not a channel id"),  # a group or user id (no -100 prefix)
        ("0", "not a valid channel id"),
        ("-100", "not a channel id"),
        ("-1000", "not a valid channel id"),
        ("@ab", "not a channel username"),  # too short
        ("@1abc", "not a channel username"),  # must start with a letter
        ("@name-with-dash", "not a channel username"),
        ("@" + "a" * 33, "not a channel username"),
        ("https://example.com/durov", "not a channel username"),
        ("name'; DROP TABLE x;--", "not a channel username"),
    ],
)
def test_parse_channel_ref_rejects(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_channel_ref(text)


# --- raw_payload cap --------------------------------------------------------------------------------


def test_small_payload_is_kept_whole() -> None:
    payload = {"id": 1, "message": "привет", "nested": {"a": [1, 2, 3]}}
    kept, truncated, size = cap_payload(payload, dump_json_bytes)
    assert kept == payload and truncated is False
    assert size == len(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode())


def test_payload_at_the_cap_is_kept_and_above_it_is_cut_keeping_key_fields() -> None:
    filler = "x" * (PAYLOAD_CAP_BYTES - payload_size({"id": 1, "message": ""}, dump_json_bytes))
    exact = {"id": 1, "message": filler}
    assert payload_size(exact, dump_json_bytes) == PAYLOAD_CAP_BYTES
    assert cap_payload(exact, dump_json_bytes)[1] is False

    big = {"id": 7, "date": "2025-01-02T03:04:05Z", "views": 10, "message": filler + "y", "entities": []}
    kept, truncated, size = cap_payload(big, dump_json_bytes)
    assert truncated is True and size == payload_size(big, dump_json_bytes) > PAYLOAD_CAP_BYTES
    assert kept == {
        "id": 7,
        "date": "2025-01-02T03:04:05Z",
        "views": 10,
        "_truncated": True,
        "_original_bytes": size,
    }
    assert payload_size(kept, dump_json_bytes) <= PAYLOAD_CAP_BYTES


def test_payload_whose_key_fields_alone_exceed_the_cap_keeps_small_scalars() -> None:
    huge_media = {"blob": "z" * (PAYLOAD_CAP_BYTES + 10)}
    kept, truncated, _ = cap_payload({"id": 3, "media": huge_media, "media_type": "photo"}, dump_json_bytes)
    assert truncated is True
    assert kept["id"] == 3 and kept["media_type"] == "photo" and "media" not in kept
    assert payload_size(kept, dump_json_bytes) <= PAYLOAD_CAP_BYTES
