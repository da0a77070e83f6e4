"""The bulk statements take their rows by column name, on both dialects, and the document upsert's SET
list lives in one query.

raw_insert_messages and processing_upsert_documents read a JSON array of objects keyed by column name
(`jsonb_to_recordset` on PostgreSQL, `json_each` + `->> 'name'` on SQLite). These tests hold the names
in step everywhere they are written: the table, the row builders (stores.raw.raw_row,
stores.processing.document_row), the statements' column lists, and show that the order of the keys
in a row does not matter.
"""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tg_parser.db.base import Database
from tg_parser.db.catalog import SqlCatalog
from tg_parser.db.codec import JsonText, NaiveDatetimeError, dump_json, format_timestamp
from tg_parser.domain.models import Entity, ProcessedDocument
from tg_parser.stores.processing import DocumentRow, ProcessingStore, document_row
from tg_parser.stores.raw import RawStore, raw_row

T0 = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def a_raw_row(channel_id: int, message_id: int = 7) -> dict:
    """A row with a distinct value in every column, so a value in the wrong column shows."""
    return raw_row(
        channel_id=channel_id,
        message_type="comment",
        message_id=message_id,
        source_id="@src",
        date=T0,
        edit_date=T0 + timedelta(hours=1, microseconds=3),
        text="text ' \" % :x 👋",
        thread_id=11,
        parent_message_id=12,
        grouped_id=13,
        views=14,
        forwards=15,
        replies=16,
        media_type="photo",
        media=JsonText(dump_json({"type": "photo", "size": 2**70})),
        raw_payload=JsonText(dump_json({"id": message_id, "k": [1, None]})),
        payload_truncated=True,
        payload_size=17,
        inserted_at=T0 + timedelta(days=2),
    )


def a_document(ref: str) -> ProcessedDocument:
    return ProcessedDocument(
        source_ref=ref,
        channel_id=-1001,
        message_date=T0,
        processed_at=T0 + timedelta(minutes=5),
        text_clean="clean ' \" %",
        summary="summary",
        topics=["a", "b"],
        entities=[Entity(type="url", value="https://x", confidence=0.5)],
        language="ru",
        model="m",
        prompt_id="p",
        pipeline_version="v",
        input_tokens=21,
        output_tokens=22,
        metadata={"k": {"n": 2**70}},
    )


def table_columns(db: Database, query: str, key: str) -> list[str]:
    row = db.fetch_one(query, {"source_ref": key})
    assert row is not None
    return list(row)


# --- the names, everywhere they are written --------------------------------------------------------


def _insert_columns(sql: str) -> list[str]:
    match = re.search(r"INSERT INTO \S+ \((.*?)\)\s*SELECT", sql, re.S)
    assert match, sql
    return [c.strip() for c in match.group(1).split(",")]


def _pg_names(sql: str) -> tuple[list[str], list[str]]:
    """(the SELECT list, the names the recordset declares) of a PostgreSQL bulk statement."""
    select = re.search(r"SELECT (.*?)\s+FROM jsonb_to_recordset", sql, re.S)
    record = re.search(r"AS r \((.*?)\)\s*ON CONFLICT", sql, re.S)
    assert select and record, sql
    selected = [c.strip().removeprefix("r.") for c in select.group(1).split(",")]
    declared = [c.split()[0] for c in record.group(1).split(",")]
    return selected, declared


def _sqlite_names(sql: str) -> list[str]:
    select = re.search(r"SELECT (.*?)\s+FROM json_each", sql, re.S)
    assert select, sql
    return re.findall(r"r\.value ->>? '([a-z_]+)'", select.group(1))


@pytest.mark.parametrize(
    ("query", "builder_keys"),
    [
        ("raw_insert_messages", lambda: list(a_raw_row(-1001))),
        ("processing_upsert_documents", lambda: list(document_row(a_document("tg:-1001:post:1")))),
    ],
)
def test_every_place_names_the_same_columns_in_the_same_order(query: str, builder_keys) -> None:
    keys = builder_keys()
    pg = SqlCatalog.load("postgres").get(query).sql
    lite = SqlCatalog.load("sqlite").get(query).sql
    assert _insert_columns(pg) == keys
    assert _pg_names(pg) == (keys, keys)
    assert _insert_columns(lite) == keys
    assert _sqlite_names(lite) == keys


def test_the_single_row_insert_binds_the_builders_keys_by_name() -> None:
    # SQLite stores raw rows with raw_insert_message, bound per row by parameter name.
    keys = list(a_raw_row(-1001))
    for dialect in ("sqlite", "postgres"):
        sql = SqlCatalog.load(dialect).get("raw_insert_message").sql
        match = re.search(
            r"INSERT INTO \S+ \((.*?)\)\s*VALUES \((.*?)\)\s*(?:ON CONFLICT|RETURNING|;|\Z)", sql, re.S
        )
        assert match, sql
        assert [c.strip() for c in match.group(1).split(",")] == keys
        # SQLite's variant wraps the text columns in CAST(:name AS TEXT) (they may arrive as UTF-8 bytes);
        # each value is still the parameter of its column's name.
        values = [re.sub(r"^CAST\((.*) AS TEXT\)$", r"\1", v.strip()) for v in match.group(2).split(",")]
        assert values == [f":{k}" for k in keys]


def test_the_builders_name_every_column_of_their_tables(db: Database) -> None:
    raw = RawStore(db)
    row = a_raw_row(-1001)
    raw.store_rows([row])
    assert table_columns(db, "raw_get_message", row["source_ref"]) == list(row)
    document = a_document(row["source_ref"])
    ProcessingStore(db).upsert_documents([document])
    assert table_columns(db, "processing_get_document", document.source_ref) == list(document_row(document))


# --- values go by name -------------------------------------------------------------------------------


def _shuffled(obj: dict, seed: int) -> dict:
    items = list(obj.items())
    random.Random(seed).shuffle(items)
    return dict(items)


def test_raw_batch_rows_are_taken_by_name(db: Database) -> None:
    raw = RawStore(db)
    per_row, batched = a_raw_row(-1001), a_raw_row(-1002)
    db.execute_many("raw_insert_message", [per_row])
    objects = json.loads(RawStore.batch_json([batched]))
    assert "thread_id" in objects[0] and list(objects[0]) == list(batched)  # every value of this row is set
    db.execute("raw_insert_messages", {"rows": JsonText(json.dumps([_shuffled(objects[0], 1)]))})
    a, b = raw.get(per_row["source_ref"]), raw.get(batched["source_ref"])
    assert a is not None and b is not None
    assert a.model_dump(exclude={"source_ref", "channel_id"}) == b.model_dump(
        exclude={"source_ref", "channel_id"}
    )
    assert (b.thread_id, b.parent_message_id, b.grouped_id, b.views, b.forwards, b.replies) == (
        11,
        12,
        13,
        14,
        15,
        16,
    )
    assert (
        b.payload_size == 17 and b.payload_truncated is True and b.media == {"type": "photo", "size": 2**70}
    )


def test_a_key_left_out_is_null(db: Database) -> None:
    row = raw_row(
        channel_id=-1001,
        message_type="post",
        message_id=1,
        source_id=None,
        date=T0,
        edit_date=None,
        text="",
        media_type=None,
        media=None,
        raw_payload=JsonText("{}"),
        payload_truncated=False,
        payload_size=None,
        inserted_at=T0,
    )
    objects = json.loads(RawStore.batch_json([row]))
    assert set(objects[0]) == {k for k, v in row.items() if v is not None}  # NULLs are left out
    db.execute("raw_insert_messages", {"rows": RawStore.batch_json([row])})
    stored = db.fetch_one("raw_get_message", {"source_ref": row["source_ref"]})
    assert stored is not None
    assert {k: v for k, v in stored.items() if v is None} == {k: None for k, v in row.items() if v is None}


def test_document_batch_rows_are_taken_by_name(db: Database) -> None:
    store = ProcessingStore(db)
    document = a_document("tg:-1001:post:1")
    objects = json.loads(ProcessingStore.documents_json([document]))
    assert objects[0]["message_date"] == format_timestamp(T0)
    db.execute("processing_upsert_documents", {"rows": JsonText(json.dumps([_shuffled(objects[0], 2)]))})
    assert store.get_document(document.source_ref) == document


# --- the document upsert: one query, one SET list per dialect -----------------------------------------


def _set_list(sql: str) -> list[tuple[str, str]]:
    match = re.search(r"ON CONFLICT \(source_ref\) DO UPDATE SET(.*)$", sql, re.S)
    assert match, sql
    return [tuple(part.strip().split(" = ")) for part in match.group(1).split(",")]  # type: ignore[misc]


def test_the_document_upsert_set_list_is_in_one_query_and_names_every_column() -> None:
    keys = list(document_row(a_document("tg:-1001:post:1")))
    expected = [(column, f"excluded.{column}") for column in keys if column != "source_ref"]
    for dialect in ("sqlite", "postgres"):
        catalog = SqlCatalog.load(dialect)
        writers = [q.name for q in catalog if re.search(r"INTO processing\.processed_documents\b", q.sql)]
        assert writers == ["processing_upsert_documents"], (dialect, writers)
        assert _set_list(catalog.get("processing_upsert_documents").sql) == expected, dialect


def test_a_document_written_alone_equals_one_written_in_a_batch(db: Database) -> None:
    store = ProcessingStore(db)
    variants = [
        a_document("tg:-1001:post:1"),
        a_document("tg:-1001:post:2").model_copy(
            update={"summary": None, "language": None, "input_tokens": None, "topics": [], "entities": []}
        ),
    ]
    twins = [
        ProcessedDocument.model_validate(
            {**d.model_dump(), "source_ref": d.source_ref.replace("-1001", "-1002"), "id": ""}
        )
        for d in variants
    ]
    for document in variants:
        store.upsert_documents([document])
    store.upsert_documents(twins)
    for alone, batched in zip(variants, twins, strict=True):
        a = db.fetch_one("processing_get_document", {"source_ref": alone.source_ref})
        b = db.fetch_one("processing_get_document", {"source_ref": batched.source_ref})
        assert a is not None and b is not None
        skip = {"source_ref", "id"}
        assert {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items() if k not in skip}


def test_upsert_documents_stores_what_the_canonical_rows_do(db: Database) -> None:
    # On PostgreSQL upsert_documents sends the rows as orjson dumps them (RFC 3339 timestamps, JSON
    # nulls), not the canonical text: a row in another zone, with microseconds and a NULL, stored by
    # either form, reads back the same.
    store = ProcessingStore(db)
    zone = timezone(timedelta(hours=3))
    row = document_row(a_document("tg:-1001:post:1"))
    row.update(
        message_date=T0.astimezone(zone), processed_at=(T0 + timedelta(microseconds=1)).astimezone(zone)
    )
    row.update(summary=None, metadata={"k": 1})
    store.upsert_documents([DocumentRow(row["source_ref"], row)])
    twin = {**row, "source_ref": "tg:-1002:post:1", "id": "doc:tg:-1002:post:1"}
    db.execute(
        "processing_upsert_documents", {"rows": ProcessingStore.documents_json([DocumentRow("x", twin)])}
    )
    a = db.fetch_one("processing_get_document", {"source_ref": row["source_ref"]})
    b = db.fetch_one("processing_get_document", {"source_ref": twin["source_ref"]})
    assert a is not None and b is not None
    assert a["message_date"] == T0 and a["summary"] is None
    skip = {"source_ref", "id"}
    assert {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items() if k not in skip}


def test_a_naive_document_timestamp_is_refused(db: Database) -> None:
    row = document_row(a_document("tg:-1001:post:1"))
    row["message_date"] = T0.replace(tzinfo=None)
    with pytest.raises(NaiveDatetimeError):
        ProcessingStore(db).upsert_documents([DocumentRow(row["source_ref"], row)])
    assert ProcessingStore(db).count_documents() == 0


def test_documents_in_another_zone_are_found_by_their_instant(db: Database) -> None:
    # Where the database stores the JSON's timestamp text as sent (SQLite: text order is time order,
    # `json_timestamps_cast` is off) upsert_documents must send canonical UTC text: a date sent as
    # 06:04+03:00 would sort after 03:04:05.000001Z and fall out of a window around its instant.
    store = ProcessingStore(db)
    zone = timezone(timedelta(hours=3))
    row = document_row(a_document("tg:-1001:post:1"))
    row.update(message_date=T0.astimezone(zone), processed_at=T0.astimezone(zone))
    row["metadata"] = {"k": 1}  # a_document's has an integer orjson refuses (its fallback is canonical)
    store.upsert_documents([DocumentRow(row["source_ref"], row)])
    window = store.stream_documents(since=T0, until=T0 + timedelta(microseconds=1))
    assert [d.source_ref for d in window] == [row["source_ref"]]
