"""Type adaptation: the SQLite text encodings, and the same Python values back from real tables on both dialects."""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from tg_parser.db.base import Database
from tg_parser.db.codec import (
    NaiveDatetimeError,
    adapt_pg_params,
    dump_json,
    encode_sqlite_params,
    encode_sqlite_value,
    format_timestamp,
    parse_timestamp,
)
from tg_parser.db.sqlite import store_path

TS_WIDTH = len("2025-01-02T03:04:05.123456Z")
PLUS3 = timezone(timedelta(hours=3))
MINUS7 = timezone(timedelta(hours=-7, minutes=-30))

# --- the text format --------------------------------------------------------------------------------


def test_format_is_fixed_width_utc_with_microseconds() -> None:
    assert (
        format_timestamp(datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)) == "2025-01-02T03:04:05.123456Z"
    )
    # whole seconds still carry the fraction, other offsets are converted to UTC
    assert format_timestamp(datetime(2025, 1, 2, 3, 4, 5, tzinfo=PLUS3)) == "2025-01-02T00:04:05.000000Z"
    assert format_timestamp(datetime(2024, 12, 31, 20, 0, tzinfo=MINUS7)) == "2025-01-01T03:30:00.000000Z"
    # years below 1000 are zero-padded, so the width never varies
    assert format_timestamp(datetime(999, 5, 6, tzinfo=UTC)) == "0999-05-06T00:00:00.000000Z"
    assert format_timestamp(datetime(1, 1, 1, tzinfo=UTC)) == "0001-01-01T00:00:00.000000Z"
    assert (
        format_timestamp(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
        == "9999-12-31T23:59:59.999999Z"
    )


def test_text_order_is_time_order() -> None:
    rng = random.Random(20250102)
    offsets = [UTC, PLUS3, MINUS7, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))]
    start = datetime(1, 1, 2, tzinfo=UTC)
    span = int((datetime(9999, 12, 30, tzinfo=UTC) - start).total_seconds())
    values = [
        (start + timedelta(seconds=rng.randrange(span), microseconds=rng.randrange(1_000_000))).astimezone(
            rng.choice(offsets)
        )
        for _ in range(2000)
    ]
    # plus near-ties that differ only in microseconds or only in the offset
    base = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    values += [base, base + timedelta(microseconds=1), (base - timedelta(microseconds=1)).astimezone(PLUS3)]
    texts = [format_timestamp(v) for v in values]
    assert {len(t) for t in texts} == {TS_WIDTH}
    assert sorted(texts) == [format_timestamp(v) for v in sorted(values)]


def test_parse_round_trips_and_returns_aware_utc() -> None:
    value = datetime(2025, 3, 4, 5, 6, 7, 89, tzinfo=PLUS3)
    parsed = parse_timestamp(format_timestamp(value))
    assert parsed == value
    assert parsed.utcoffset() == timedelta(0)
    # text written by other tools: an explicit offset is honoured, a bare one is taken as UTC
    assert parse_timestamp("2025-03-04T05:06:07+03:00") == datetime(2025, 3, 4, 2, 6, 7, tzinfo=UTC)
    assert parse_timestamp("2025-03-04T05:06:07").tzinfo is not None


@pytest.mark.parametrize(
    "convert",
    [format_timestamp, lambda v: encode_sqlite_params({"t": v}), lambda v: adapt_pg_params({"t": v})],
)
def test_naive_datetimes_are_rejected(convert) -> None:
    with pytest.raises(NaiveDatetimeError, match="naive"):
        convert(datetime(2025, 1, 2, 3, 4, 5))


def test_sqlite_encoding_of_parameters() -> None:
    encoded = encode_sqlite_params(
        {
            "b": True,
            "f": False,
            "d": {"k": "ü", "n": [1, None]},
            "l": ["a"],
            "t": datetime(2025, 1, 2, tzinfo=UTC),
            "i": 7,
            "n": None,
        }
    )
    assert encoded == {
        "b": 1,
        "f": 0,
        "d": '{"k":"ü","n":[1,null]}',
        "l": '["a"]',
        "t": "2025-01-02T00:00:00.000000Z",
        "i": 7,
        "n": None,
    }
    assert encode_sqlite_params(None) == {}
    assert dump_json({"a": "é"}) == '{"a":"é"}'  # compact and not ASCII-escaped


# --- through real tables ----------------------------------------------------------------------------

RUN_PARAMS = {
    "nested": {"quote": 'it\'s "q"', "pct": "100%", "colon": "a:b", "semi": "x;y", "unicode": "Привет 👋"},
    "list": [1, 2.5, None, True, False, "", [], {}],
    "big": 2**53 + 1,
    "neg": -(2**62),
}


def _insert_run(db: Database, run_id: str, started_at: datetime, **extra: object) -> None:
    params = {
        "run_id": run_id,
        "kind": "process",
        "started_at": started_at,
        "finished_at": None,
        "status": "running",
        "params": {},
        "counts": {},
        "error": None,
    }
    params.update(extra)
    db.execute("runs_insert", params)


def test_json_round_trips(db: Database) -> None:
    _insert_run(db, "r1", datetime(2025, 1, 2, tzinfo=UTC), params=RUN_PARAMS, counts={})
    row = db.fetch_one("runs_get", {"run_id": "r1"})
    assert row is not None
    assert row["params"] == RUN_PARAMS
    assert row["counts"] == {}
    assert isinstance(row["params"]["list"][1], float) and isinstance(row["params"]["big"], int)


def test_json_that_no_encoder_takes_is_one_type_error_naming_both() -> None:
    with pytest.raises(TypeError) as info:
        dump_json({"when": object()})
    assert "not JSON serializable" in str(info.value) and "orjson:" in str(info.value)


def test_sqlite_encoding_of_a_single_value() -> None:
    assert encode_sqlite_value("text") == "text"
    assert encode_sqlite_value(True) == 1
    assert encode_sqlite_value(datetime(2025, 1, 2, tzinfo=PLUS3)) == "2025-01-01T21:00:00.000000Z"
    assert encode_sqlite_value([1, "a"]) == '[1,"a"]'
    marker = Path("x")  # a type the codec has no rule for goes to the driver as it is
    assert encode_sqlite_value(marker) is marker


def test_json_top_level_list_round_trips(db: Database) -> None:
    card = {
        "topic_id": "topic:tg:1:post:1",
        "channel_id": 1,
        "title": "t",
        "summary": "",
        "kind": "cluster",
        "anchors": [],
        "tags": ["a'b", "100%", ":x"],
        "model": None,
        "prompt_id": None,
        "created_at": datetime(2025, 1, 2, tzinfo=UTC),
        "updated_at": datetime(2025, 1, 3, tzinfo=UTC),
        "metadata": {"k": [{"deep": {"er": None}}]},
    }
    db.execute("topics_insert_card", card)
    row = db.fetch_one("topics_get_card", {"topic_id": "topic:tg:1:post:1"})
    assert row is not None
    assert row["tags"] == ["a'b", "100%", ":x"]
    assert row["anchors"] == []
    assert row["metadata"] == {"k": [{"deep": {"er": None}}]}


def test_timestamps_come_back_aware_utc_and_exact(db: Database) -> None:
    local = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=PLUS3)
    _insert_run(db, "r1", local, finished_at=datetime(2025, 1, 2, 0, 5, tzinfo=UTC))
    row = db.fetch_one("runs_get", {"run_id": "r1"})
    assert row is not None
    assert row["started_at"] == local
    assert row["started_at"].utcoffset() == timedelta(0)
    assert row["started_at"].microsecond == 678901
    assert row["finished_at"] == datetime(2025, 1, 2, 0, 5, tzinfo=UTC)


def test_order_by_timestamp_is_time_order_across_offsets(db: Database) -> None:
    # Local wall-clock texts would sort r_east first; in UTC r_west is the later one.
    _insert_run(
        db, "r_east", datetime(2025, 1, 2, 9, 0, tzinfo=timezone(timedelta(hours=10)))
    )  # 23:00 Jan 1 UTC
    _insert_run(db, "r_west", datetime(2025, 1, 1, 20, 0, tzinfo=MINUS7))  # 03:30 Jan 2 UTC
    _insert_run(db, "r_utc", datetime(2025, 1, 2, 1, 0, tzinfo=UTC))
    rows = db.fetch_all("runs_recent", {"kind": None, "status": None, "limit": 10})
    assert [r["run_id"] for r in rows] == ["r_west", "r_utc", "r_east"]


def test_booleans_round_trip_including_null(db: Database) -> None:
    db.execute(
        "sources_insert",
        {
            "source_id": "s",
            "channel_id": None,
            "username": None,
            "title": None,
            "kind": "telegram",
            "status": "active",
            "include_comments": True,
            "since_date": None,
            "until_date": None,
            "last_post_id": 0,
            "access_hash": None,
            "fail_count": 0,
            "comments_unavailable": False,
            "created_at": datetime(2025, 1, 1, tzinfo=UTC),
            "updated_at": datetime(2025, 1, 1, tzinfo=UTC),
        },
    )
    row = db.fetch_one("sources_get", {"source_id": "s"})
    assert row is not None
    assert row["include_comments"] is True
    assert row["comments_unavailable"] is False
    run_pk = db.fetch_scalar(
        "ingest_run_start", {"source_id": "s", "run_id": "r", "started_at": datetime.now(UTC)}
    )
    row = db.fetch_one("ingest_runs_recent", {"source_id": "s", "limit": 1})
    assert row is not None and row["id"] == run_pk and row["success"] is None
    for value in (False, True):
        db.execute(
            "ingest_run_finish",
            {
                "id": run_pk,
                "finished_at": datetime.now(UTC),
                "success": value,
                "posts_fetched": 0,
                "posts_inserted": 0,
                "comments_fetched": 0,
                "comments_inserted": 0,
                "versions_recorded": 0,
                "error_class": None,
                "error_message": None,
            },
        )
        row = db.fetch_one("ingest_runs_recent", {"source_id": "s", "limit": 1})
        assert row is not None and row["success"] is value


def test_naive_datetime_parameter_is_refused_and_nothing_written(db: Database) -> None:
    with pytest.raises(NaiveDatetimeError):
        _insert_run(db, "naive", datetime(2025, 1, 2, 3, 4, 5))
    assert db.fetch_one("runs_get", {"run_id": "naive"}) is None


def test_sqlite_files_hold_the_documented_text(sqlite_dir: Path) -> None:
    # What a DBA sees with the sqlite3 shell: fixed-format UTC text, compact JSON, 0/1.
    from conftest import sqlite_settings

    from tg_parser.db.connect import open_database

    db = open_database(sqlite_settings(sqlite_dir))
    try:
        _insert_run(
            db, "r1", datetime(2025, 1, 2, 6, 4, 5, 120000, tzinfo=PLUS3), params={"k": "ü", "b": True}
        )
    finally:
        db.close()
    plain = sqlite3.connect(store_path(sqlite_dir, "processing"))
    try:
        started, params = plain.execute("SELECT started_at, params FROM runs WHERE run_id = 'r1'").fetchone()
    finally:
        plain.close()
    assert started == "2025-01-02T03:04:05.120000Z"
    assert params == '{"k":"ü","b":true}'
