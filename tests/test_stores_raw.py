"""RawStore on both dialects: the snapshot rule, the versions journal, counters, the payload cap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tg_parser.db.base import Database
from tg_parser.db.codec import dump_json_bytes
from tg_parser.domain.models import RawMessage
from tg_parser.domain.payload import PAYLOAD_CAP_BYTES, payload_size
from tg_parser.stores import BatchResult, RawStore

T0 = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def msg(
    message_id: int,
    text: str = "hello",
    *,
    channel_id: int = -1001,
    message_type: str = "post",
    **fields: object,
) -> RawMessage:
    values: dict[str, object] = {
        "source_id": "@chan",
        "date": T0 + timedelta(minutes=message_id),
        "text": text,
        "raw_payload": {"id": message_id, "message": text},
    }
    values.update(fields)
    return RawMessage.build(channel_id=channel_id, message_type=message_type, message_id=message_id, **values)  # type: ignore[arg-type]


@pytest.fixture
def raw(db: Database) -> RawStore:
    return RawStore(db)


def result(inserted: int = 0, versions: int = 0, unchanged: int = 0) -> BatchResult:
    return BatchResult(inserted=inserted, versions=versions, unchanged=unchanged)


# --- inserts ----------------------------------------------------------------------------------------


def test_new_messages_are_stored_as_given(raw: RawStore) -> None:
    post = msg(
        1,
        "text with ' \" % : ; and 👋",
        edit_date=T0 + timedelta(days=1),
        grouped_id=2**62,
        views=10,
        forwards=2,
        replies=3,
        media_type="photo",
        media={"kind": "photo", "sizes": [1, 2]},
        raw_payload={"id": 1, "nested": {"list": [1, None, "x"]}},
    )
    comment = msg(5, "a reply", message_type="comment", thread_id=1, parent_message_id=1)
    assert raw.store_batch([post, comment]) == result(inserted=2)
    for original in (post, comment):
        stored = raw.get(original.source_ref)
        assert stored is not None
        # the store records the payload's size; everything else is exactly what was given
        assert stored.payload_size == payload_size(original.raw_payload, dump_json_bytes)
        assert stored.model_copy(update={"payload_size": None}) == original
    assert raw.get("tg:-1001:post:999") is None
    assert raw.store_batch([]) == result()


def test_reingesting_unchanged_messages_changes_nothing(raw: RawStore) -> None:
    batch = [msg(i) for i in range(1, 11)]
    assert raw.store_batch(batch) == result(inserted=10)
    snapshot = [raw.get(m.source_ref) for m in batch]
    # a later run sees the same messages (fresh objects, new inserted_at): nothing new is stored
    again = [msg(i) for i in range(1, 11)]
    assert raw.store_batch(again) == result(unchanged=10)
    assert [raw.get(m.source_ref) for m in batch] == snapshot
    assert all(raw.versions(m.source_ref) == [] for m in batch)
    assert raw.count() == 10


def test_duplicates_inside_one_batch(raw: RawStore) -> None:
    first = msg(1, "v1")
    assert raw.store_batch([first, msg(1, "v1"), msg(2)]) == result(inserted=2, unchanged=1)
    # a new message and its edit in the same batch: stored once, the edit journaled once
    edited = msg(3, "v2", edit_date=T0 + timedelta(hours=1))
    assert raw.store_batch([msg(3, "v1"), edited, edited]) == result(inserted=1, versions=1, unchanged=1)
    assert raw.get(edited.source_ref).text == "v1"  # type: ignore[union-attr]
    assert [v.text for v in raw.versions(edited.source_ref)] == ["v2"]
    assert raw.count() == 3


# --- the snapshot rule and the versions journal -----------------------------------------------------


def test_changed_text_is_journaled_and_snapshot_kept(raw: RawStore) -> None:
    original = msg(1, "first", raw_payload={"id": 1, "message": "first"})
    raw.store_batch([original])
    before = datetime.now(UTC)
    edited = msg(
        1, "second ' % :x ;", edit_date=T0 + timedelta(hours=2), raw_payload={"id": 1, "message": "second"}
    )
    assert raw.store_batch([edited]) == result(versions=1)
    stored = raw.get(original.source_ref)
    assert stored is not None
    assert (stored.text, stored.edit_date, stored.raw_payload) == (
        "first",
        None,
        {"id": 1, "message": "first"},
    )
    (version,) = raw.versions(original.source_ref)
    assert version.source_ref == original.source_ref
    assert (version.text, version.edit_date) == ("second ' % :x ;", T0 + timedelta(hours=2))
    assert version.raw_payload == {"id": 1, "message": "second"}
    assert before <= version.observed_at <= datetime.now(UTC) and version.id is not None


def test_changed_edit_date_alone_is_a_version(raw: RawStore) -> None:
    raw.store_batch([msg(1, "same", edit_date=T0)])
    assert raw.store_batch([msg(1, "same", edit_date=T0 + timedelta(microseconds=1))]) == result(versions=1)
    assert raw.store_batch([msg(1, "same", edit_date=None)]) == result(
        versions=1
    )  # an edit date vanishing is a change too
    assert [v.edit_date for v in raw.versions(msg(1).source_ref)] == [T0 + timedelta(microseconds=1), None]


def test_same_edit_seen_twice_is_one_version(raw: RawStore) -> None:
    raw.store_batch([msg(1, "v1")])
    edit = msg(1, "v2", edit_date=T0 + timedelta(hours=1))
    assert raw.store_batch([edit]) == result(versions=1)
    assert raw.store_batch([msg(1, "v2", edit_date=T0 + timedelta(hours=1))]) == result(unchanged=1)
    assert len(raw.versions(edit.source_ref)) == 1
    # compared with the latest observation: going back to the first text is another change
    assert raw.store_batch([msg(1, "v1")]) == result(versions=1)
    assert [v.text for v in raw.versions(edit.source_ref)] == ["v2", "v1"]
    assert raw.get(edit.source_ref).text == "v1"  # type: ignore[union-attr]


def test_counters_are_refreshed_without_a_version(raw: RawStore) -> None:
    raw.store_batch([msg(1, views=10, forwards=1, replies=0)])
    assert raw.store_batch([msg(1, views=25, forwards=None, replies=4)]) == result(unchanged=1)
    stored = raw.get(msg(1).source_ref)
    assert stored is not None
    assert (stored.views, stored.forwards, stored.replies) == (25, 1, 4)  # NULL keeps the known value
    assert raw.versions(stored.source_ref) == []
    # counters are refreshed on an edit too
    raw.store_batch([msg(1, "edited", views=30)])
    assert raw.get(stored.source_ref).views == 30  # type: ignore[union-attr]


def test_versions_are_per_message(raw: RawStore) -> None:
    raw.store_batch([msg(1, "a"), msg(2, "b"), msg(1, "c", channel_id=-1002)])
    assert raw.store_batch([msg(1, "a2"), msg(2, "b"), msg(1, "c", channel_id=-1002)]) == result(
        versions=1, unchanged=2
    )
    assert [v.text for v in raw.versions(msg(1).source_ref)] == ["a2"]
    assert raw.versions(msg(2).source_ref) == []
    assert raw.versions(msg(1, channel_id=-1002).source_ref) == []


# --- payload cap ------------------------------------------------------------------------------------


def _big_payload(message_id: int, size: int) -> dict:
    return {
        "id": message_id,
        "date": "2025-01-02T03:04:05+00:00",
        "views": 12,
        "reply_to": {"reply_to_msg_id": 3},
        "message": "m",
        "entities": ["x" * 1000] * (size // 1000),
    }


def test_oversized_payload_is_capped_with_flag_and_size(raw: RawStore) -> None:
    payload = _big_payload(1, 300 * 1024)
    original_size = payload_size(payload, dump_json_bytes)
    assert original_size > PAYLOAD_CAP_BYTES
    raw.store_batch([msg(1, raw_payload=payload)])
    stored = raw.get(msg(1).source_ref)
    assert stored is not None
    assert stored.payload_truncated is True
    assert stored.payload_size == original_size
    assert payload_size(stored.raw_payload, dump_json_bytes) <= PAYLOAD_CAP_BYTES
    assert "entities" not in stored.raw_payload and "message" not in stored.raw_payload
    for key in ("id", "date", "views", "reply_to"):  # key fields are kept
        assert stored.raw_payload[key] == payload[key]
    assert stored.raw_payload["_truncated"] is True and stored.raw_payload["_original_bytes"] == original_size


def test_payload_under_the_cap_is_kept_whole(raw: RawStore) -> None:
    payload = _big_payload(1, 200 * 1024)
    assert payload_size(payload, dump_json_bytes) < PAYLOAD_CAP_BYTES
    raw.store_batch([msg(1, raw_payload=payload)])
    stored = raw.get(msg(1).source_ref)
    assert stored is not None
    assert stored.raw_payload == payload and stored.payload_truncated is False
    assert stored.payload_size == payload_size(payload, dump_json_bytes)


def test_version_payload_is_capped_too(raw: RawStore) -> None:
    raw.store_batch([msg(1, "v1")])
    raw.store_batch([msg(1, "v2", raw_payload=_big_payload(1, 300 * 1024))])
    (version,) = raw.versions(msg(1).source_ref)
    assert version.raw_payload["_truncated"] is True
    assert payload_size(version.raw_payload, dump_json_bytes) <= PAYLOAD_CAP_BYTES


# --- reads ------------------------------------------------------------------------------------------


def test_count_stream_and_channels(raw: RawStore) -> None:
    raw.store_batch(
        [
            msg(3),
            msg(1),
            msg(2, message_type="comment", thread_id=1),
            msg(7, channel_id=-1002, source_id="@other"),
            msg(9, channel_id=-1002, source_id="@other", date=T0 - timedelta(days=1)),
        ]
    )
    assert raw.count() == 5
    assert raw.count(channel_id=-1001) == 3
    assert raw.count(channel_id=-1001, message_type="post") == 2
    assert raw.count(message_type="comment") == 1
    assert raw.count(channel_id=-1003) == 0
    streamed = list(raw.stream_channel(-1002))
    assert [m.message_id for m in streamed] == [9, 7]  # date order
    assert all(isinstance(m, RawMessage) for m in streamed)
    assert [m.message_id for m in raw.stream_channel(-1001)] == [1, 2, 3]
    channels = raw.channels()
    assert channels == [
        {
            "channel_id": -1002,
            "messages": 2,
            "first_date": T0 - timedelta(days=1),
            "last_date": T0 + timedelta(minutes=7),
        },
        {
            "channel_id": -1001,
            "messages": 3,
            "first_date": T0 + timedelta(minutes=1),
            "last_date": T0 + timedelta(minutes=3),
        },
    ]


def test_crash_rerun_stores_exactly_the_same_set(raw: RawStore, db: Database) -> None:
    batch = [msg(i) for i in range(1, 21)]
    with pytest.raises(RuntimeError), db.transaction():
        raw.store_batch(batch)
        raise RuntimeError("crash before commit")
    assert raw.count() == 0
    assert raw.store_batch(batch) == result(inserted=20)
    assert raw.store_batch(batch) == result(unchanged=20)
    assert [m.message_id for m in raw.stream_channel(-1001)] == list(range(1, 21))


# --- the two insert forms -------------------------------------------------------------------------------


def test_batch_statement_stores_what_the_row_statement_stores(raw: RawStore, db: Database) -> None:
    # RawStore inserts new rows with one statement per batch on PostgreSQL (raw_insert_messages, the
    # rows as one JSON array) and binds raw_insert_message per row on SQLite. Both forms exist on both
    # dialects and must store the same values.
    def variants(channel_id: int) -> list[RawMessage]:
        messages = [
            msg(
                1,
                "quotes ' \" % : ; \\ \x01 and 👋",
                channel_id=channel_id,
                edit_date=T0 + timedelta(days=1, microseconds=7),
                grouped_id=2**62,
                views=10,
                forwards=0,
                replies=3,
                media_type="photo",
                media={"kind": "photo", "sizes": [1, None, "x"], "ratio": 1.5},
                raw_payload={"id": 1, "nested": {"list": [1, None, "x", -2.25]}, "big": 2**70},
            ),
            msg(2, "", channel_id=channel_id, message_type="comment", thread_id=1, parent_message_id=1),
            msg(3, channel_id=channel_id, raw_payload=_big_payload(3, 300 * 1024)),
        ]
        return [m.model_copy(update={"inserted_at": T0}) for m in messages]

    batch, per_row = variants(-1001), variants(-1002)
    db.execute("raw_insert_messages", {"rows": RawStore.batch_json([RawStore.row_of(m) for m in batch])})
    db.execute_many("raw_insert_message", [RawStore.row_of(m) for m in per_row])
    for a, b in zip(batch, per_row, strict=True):
        stored_a, stored_b = raw.get(a.source_ref), raw.get(b.source_ref)
        assert stored_a is not None and stored_b is not None
        assert stored_a.model_dump(exclude={"source_ref", "channel_id"}) == stored_b.model_dump(
            exclude={"source_ref", "channel_id"}
        )
        assert stored_a.model_copy(update={"payload_size": None}) == a.model_copy(
            update={"raw_payload": stored_a.raw_payload, "payload_truncated": stored_a.payload_truncated}
        )
    assert raw.get(batch[2].source_ref).payload_truncated is True  # type: ignore[union-attr]


def test_media_with_integers_beyond_64_bits_is_stored(raw: RawStore) -> None:
    # orjson refuses such integers; row_of serialises media with the payload's serialiser (stdlib
    # fallback), so the batch JSON still holds the row (one statement on PostgreSQL).
    odd = msg(1, media_type="document", media={"size": 2**70})
    assert RawStore.batch_json([RawStore.row_of(odd)]) is not None
    assert raw.store_batch([odd, msg(2)]) == result(inserted=2)
    assert raw.get(odd.source_ref).media == {"size": 2**70}  # type: ignore[union-attr]
