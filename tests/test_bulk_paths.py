"""The bulk paths of issue 14: tuple rows (Database.execute_many_tuples, RawStore.store_tuples), the
export's read-ahead and its keyset seek on SQLite — both dialects where a database is involved."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.process_data import seed_documents

from tg_parser.db.base import Database
from tg_parser.db.params import to_numbered
from tg_parser.ingestion.export_import import export_row, export_tuple, ref_prefix
from tg_parser.stores import RawStore
from tg_parser.stores.base import BIGINT_MAX, BIGINT_MIN, FAR_FUTURE, FAR_PAST
from tg_parser.stores.export import read_ahead
from tg_parser.stores.raw import RAW_COLUMNS, row_of_tuple


def test_numbered_placeholders_follow_first_appearance_and_keep_literals() -> None:
    sql, names = to_numbered("SELECT :b, '50% :x', :a, :b::int -- :c 5%")
    assert sql == "SELECT ?1, '50% :x', ?2, ?1::int -- :c 5%"
    assert names == ("b", "a")


def _tuples(channel_id: int, ids: range, text: str) -> list[tuple]:
    prefix = ref_prefix(channel_id)
    return [
        export_tuple(
            (
                i,
                "2024-01-01T00:00:00.000000Z",
                None,
                f"{text} {i}".encode(),
                None,
                None,
                None,
                f'{{"id":{i}}}'.encode(),
                False,
                9,
            ),
            prefix,
            channel_id,
            "s1",
            "2024-01-02T03:04:05.678901Z",
        )
        for i in ids
    ]


def test_store_tuples_inserts_then_compares_like_store_rows(db: Database) -> None:
    raw = RawStore(db)
    first = raw.store_tuples(_tuples(1500000001, range(1, 51), "hello"))
    assert (first.inserted, first.versions, first.unchanged) == (50, 0, 0)
    stored = raw.get("tg:1500000001:post:7")
    assert stored is not None and stored.text == "hello 7" and stored.raw_payload == {"id": 7}
    # A second batch overlapping the first: the known rows are compared (one edited), the rest inserted.
    again = _tuples(1500000001, range(41, 61), "hello")
    edited = list(again[0])
    edited[RAW_COLUMNS.index("text")] = "hello 41, edited"
    again[0] = tuple(edited)
    second = raw.store_tuples(again)
    assert (second.inserted, second.versions, second.unchanged) == (10, 1, 9)
    assert raw.get("tg:1500000001:post:41").text == "hello 41"  # the snapshot stays as first seen


def test_execute_many_tuples_refuses_columns_in_another_order(db: Database) -> None:
    columns = list(RAW_COLUMNS)
    columns[0], columns[1] = columns[1], columns[0]
    with pytest.raises(ValueError, match="raw_insert_message takes the columns"):
        db.execute_many_tuples("raw_insert_message", columns, [])


def test_export_row_is_the_tuple_row_parsed() -> None:
    from datetime import UTC, datetime

    spooled = (
        5,
        "2024-01-01T00:00:00.000000Z",
        "2024-01-01T01:00:00.000000Z",
        b"t",
        3,
        "photo",
        b'{"a":1}',
        b"{}",
        False,
        2,
    )
    row = export_row(spooled, channel_id=7, source_id="s", inserted_at=datetime(2024, 1, 2, tzinfo=UTC))
    assert row == row_of_tuple(export_tuple(spooled, "tg:7:post:", 7, "s", "2024-01-02T00:00:00.000000Z"))
    assert row["source_ref"] == "tg:7:post:5" and row["edit_date"] == datetime(2024, 1, 1, 1, tzinfo=UTC)


def test_read_ahead_yields_in_order_raises_in_place_and_stops_when_closed() -> None:
    fetched: list[int] = []

    def batches(fail_at: int | None = None) -> Iterator[int]:
        for i in range(5):
            if i == fail_at:
                raise RuntimeError(f"read {i} failed")
            fetched.append(i)
            yield i

    assert list(read_ahead(batches())) == [0, 1, 2, 3, 4]
    seen = []
    with pytest.raises(RuntimeError, match="read 2 failed"):
        for item in read_ahead(batches(fail_at=2)):
            seen.append(item)
    assert seen == [0, 1]
    fetched.clear()
    source = batches()
    reader = read_ahead(source)
    assert next(reader) == 0
    reader.close()
    assert fetched == [0, 1]  # at most one batch read ahead, none after closing
    assert next(source, None) == 2  # the source was left where the read-ahead stopped


def test_sqlite_export_batches_seek_on_the_keyset(db: Database) -> None:
    if db.dialect != "sqlite":
        pytest.skip("the plan shape is SQLite's (PostgreSQL's index condition holds the row value already)")
    params = {
        "channel_lo": BIGINT_MIN,
        "channel_hi": BIGINT_MAX,
        "since": FAR_PAST,
        "until": FAR_FUTURE,
        "after_channel": 1,
        "after_date": FAR_PAST,
        "after_ref": "",
        "upto_channel": BIGINT_MAX,
        "upto_date": FAR_FUTURE,
        "upto_ref": "",
        "batch_size": 10,
    }
    plan = "\n".join(db.explain("export_stream_documents", params))
    assert "(channel_id,message_date,source_ref)>(?,?,?)" in plan, plan


def test_export_tuples_carry_the_same_values_as_dict_rows(db: Database) -> None:
    """The export's tuple batches (binary results on PostgreSQL) hold exactly the values, and the Python
    types, that the query's ordinary dict rows hold."""
    seed_documents(db, 7, words=3, channel_id=-1001234567890)
    params = {
        "channel_lo": BIGINT_MIN,
        "channel_hi": BIGINT_MAX,
        "since": FAR_PAST,
        "until": FAR_FUTURE,
        "after_channel": BIGINT_MIN,
        "after_date": FAR_PAST,
        "after_ref": "",
        "upto_channel": BIGINT_MAX,
        "upto_date": FAR_FUTURE,
        "upto_ref": "",
        "batch_size": 100,
    }
    rows = db.fetch_all("export_stream_documents", params)
    batches = list(
        db.keyset_batches(
            "export_stream_documents",
            params,
            start={k: params[k] for k in ("after_channel", "after_date", "after_ref")},
            after=lambda row: {"after_channel": row[1], "after_date": row[2], "after_ref": row[0]},
            batch_size=100,
            tuples=True,
        )
    )
    assert len(rows) == 7 and len(batches) == 1
    assert batches[0] == [tuple(row.values()) for row in rows]
    first = batches[0][0]
    assert [type(value) for value in first] == [type(value) for value in rows[0].values()]
    assert first[1] == -1001234567890 and type(first[1]) is int
