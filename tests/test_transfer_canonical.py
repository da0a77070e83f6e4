"""The canonical rendering: Python (from SQLite text) and PostgreSQL (from stored values) must agree."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest

from tg_parser.db.connect import pg_target
from tg_parser.transfer.canonical import (
    MOD,
    JsonRejected,
    canonical_json,
    combine_pg_sums,
    field,
    json_field,
    numeric_text,
)
from tg_parser.transfer.checksum import python_row
from tg_parser.transfer.rowcode import renderer
from tg_parser.transfer.schema import Column, Table

TRICKY_JSON = [
    "1.0",
    "1",
    "[1.0, 1, 1e2, 1.50, 1E-7, -0, -0.0, 0.1, 12345678901234567890.123, 1e400, -1.5e-3]",
    '{"b": 1, "aa": 2, "a": 3}',
    '{"a": 1, "a": 2}',  # duplicate keys: jsonb keeps the last
    '{"é": 1, "z": 2, "ab": 3, "ñandú": {"k": [], "kk": {}}}',
    '"\\u00e9\\u0001\\u001f\\u007f/\\n\\t\\r\\b\\f\\\\\\"\\ud83d\\ude00 \\u2028"',
    '"plain Кириллица and emoji 😀"',
    '{"nested": {"z": [true, false, null, "x"], "y": {"b": 0.5, "a": -2}}, "": ""}',
    "  [ 1 ,  2 ]  ",
    "{}",
    "[]",
    "null",
    '{"long key with spaces": 1, "k": 2, "kk": 3, "\\u00e9": 4}',
    "0.30000000000000004",
    "[123456789012345678901234567890, -9223372036854775809]",
]


@pytest.fixture
def pg(pg_only_settings):
    target = pg_target(pg_only_settings)
    with psycopg.connect(**target.connect_kwargs(), autocommit=True) as conn:
        yield conn


@pytest.mark.parametrize("text", TRICKY_JSON)
def test_canonical_json_equals_jsonb_text(pg, text):
    expected = pg.execute("SELECT %s::jsonb::text", (text,)).fetchone()[0]
    assert canonical_json(text) == expected
    assert canonical_json(text.encode()) == expected


def test_float_one_point_zero_is_not_one():
    assert canonical_json("1.0") != canonical_json("1")
    assert canonical_json("1e2") == canonical_json("100")  # numeric keeps no exponent
    assert numeric_text("-0.0") == "0.0"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"a": NaN}', "NaN"),
        ("[Infinity]", "Infinity"),
        ('"a\\u0000b"', "\\u0000"),
        ('"\\ud800"', "surrogate"),
        ('{"a": 1,}', "malformed"),
        ('{"a": 1} x', "malformed"),
        ("1e999999", "numeric"),
        ('"line\nbreak"', "malformed"),  # raw control character inside a string
        # jsonb keeps the last of duplicate keys but refuses what a dropped value holds
        ('{"a": "\\ud800", "a": 1}', "surrogate"),
        ('{"a": {"b": ["\\u0000"]}, "a": 1}', "\\u0000"),
    ],
)
def test_json_postgresql_would_reject(pg, text, reason):
    with pytest.raises(JsonRejected, match=reason.replace("\\", "\\\\")):
        json_field(text)
    with pytest.raises(psycopg.Error):
        pg.execute("SELECT %s::jsonb::text", (text,))


def test_strip_nul_from_json():
    assert canonical_json('{"a\\u0000": "x\\u0000y"}', strip_nuls=True) == '{"a": "xy"}'
    # a dropped duplicate holding NUL is no obstacle once NULs are stripped (the loader sends the result)
    assert canonical_json('{"a": "\\u0000", "a": 1}', strip_nuls=True) == '{"a": 1}'


def test_fields_are_unambiguous():
    assert field("text", None) == b"N"
    assert field("text", "") == b"T\\;"
    assert field("text", "N") == b"TN\\;"
    assert field("int", "-42") == b"I-42;"

    def row(*values: str | None) -> bytes:
        return b"".join(field("text", v) for v in values)

    # Backslashes and terminators inside values cannot move a boundary between two columns.
    pairs = [("a\\", ";b"), ("a", "\\;b"), ("a\\;", "b"), ("a", None), ("a", ""), ("aN", None)]
    renderings = {row(*p) for p in pairs}
    assert len(renderings) == len(pairs)


def test_combine_pg_sums_is_the_unsigned_sum():
    hashes = [2**128 - 1, 2**127, 5, 2**64 + 3, (2**63) << 64 | (2**63)]

    def signed(value: int) -> int:
        return value - 2**64 if value >= 2**63 else value

    highs = [signed(h >> 64) for h in hashes]
    lows = [signed(h & (2**64 - 1)) for h in hashes]
    combined = combine_pg_sums(sum(highs), sum(lows), sum(1 for x in lows if x < 0))
    assert combined == sum(hashes) % MOD


def test_generated_renderer_equals_python_rendering(tmp_path):
    """The generated per-table renderer equals a row rendered value by value in Python."""
    table = Table(
        "raw",
        "t",
        [
            Column("k", "text", "TEXT", "text"),
            Column("n", "int", "INTEGER", "bigint"),
            Column("b", "bool", "BOOLEAN_INT", "boolean"),
            Column("ts", "ts", "TIMESTAMP_TEXT", "timestamp with time zone"),
            Column("j", "json", "JSON_TEXT", "jsonb"),
            Column("x", "text", "TEXT", "text"),
            Column("r", "real", "REAL", "double precision"),
        ],
        ["k"],
    )
    conn = sqlite3.connect(tmp_path / "raw.sqlite")
    conn.execute(
        "CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER, b BOOLEAN_INT, ts TIMESTAMP_TEXT, j JSON_TEXT, x TEXT, r REAL)"
    )
    rows = [
        ("ключ", -5, 1, "2025-01-02T03:04:05.123456Z", '{"b":1,"a":[1.0,2]}', "tab\there\nnew\\line", 0.1),
        ("empty", None, None, None, None, "", None),
        ("emoji😀", 2**63 - 1, 0, "0001-01-01T00:00:00.000000Z", "null", "N", -0.0),
        ("int in real", 0, 0, "2025-01-02T03:04:05.000000Z", "[]", "\\;", 3),
    ]
    conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.text_factory = bytes
    render = renderer(table)
    for raw in conn.execute("SELECT * FROM t ORDER BY k").fetchall():
        rendering = python_row(table, raw, strip_nul=False)
        assert render(raw) == rendering
    conn.close()


@pytest.mark.parametrize(
    "text", [*TRICKY_JSON, '{"b": [1.50, {"d": 2e-3, "c": -0.0}], "a": 12345678901234567890123}']
)
def test_fast_and_stdlib_json_renderers_agree(text):
    """orjson's indented output turned into jsonb's text equals the stdlib encoder's rendering."""
    from tg_parser.transfer import canonical

    value = canonical.parse_json(text)
    assert canonical._render_bytes(value).decode() == canonical.render_json_value(value)
