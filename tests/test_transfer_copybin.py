"""The compiled binary COPY encoder `_copybin` against its reference, rowcode.binary_encoder, and PostgreSQL.

Its contract: for any batch the per-row Python encoder accepts, `_copybin.encode(rows, kinds, offset)`
returns exactly `b"".join(map(binary_encoder(table, offset), rows))`; for any batch that encoder refuses,
it raises (TypeError, OverflowError, ValueError) instead of answering. The batches come from a seeded
generator of values at and beyond each column kind's limits, of the wrong type, and of rows of the wrong
shape; the bytes PostgreSQL reads back from a binary COPY are checked against the values sent.
"""

from __future__ import annotations

import json
import math
import random
import sqlite3
import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tg_parser.db.connect import pg_target
from tg_parser.transfer import rowcode
from tg_parser.transfer.rowcode import BINARY_SIGNATURE, BINARY_TRAILER, binary_batch_encoder, binary_encoder
from tg_parser.transfer.schema import BOOL, INT, JSON, REAL, TEXT, TS, Column, Table

try:
    from tg_parser.transfer import _copybin
except ImportError:  # reported by test_transfer_extensions.py
    _copybin = None


# One column of every kind the encoder knows; `pg` is the PostgreSQL type of the round trip.
COLUMNS = [
    Column("q", INT, "INTEGER", "bigint"),
    Column("i", INT, "INTEGER", "integer"),
    Column("h", INT, "INTEGER", "smallint"),
    Column("t", TS, "TIMESTAMP_TEXT", "timestamp with time zone"),
    Column("b", BOOL, "BOOLEAN_INT", "boolean"),
    Column("d", REAL, "REAL", "double precision"),
    Column("s", TEXT, "TEXT", "text"),
    Column("j", JSON, "JSON_TEXT", "jsonb"),
]
WIDTHS = {"bigint": 8, "integer": 4, "smallint": 2}
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _table(columns: list[Column]) -> Table:
    return Table("raw", "t", columns, [columns[0].name])


def _kinds(table: Table) -> bytes:
    return b"".join(rowcode._binary_kind(column) for column in table.columns)


@pytest.fixture
def compiled():
    if _copybin is None:
        pytest.skip("the C encoder is not built (see test_extension_is_built_and_current)")
    return _copybin


def _outcome(call: Callable[[], bytes]) -> bytes | BaseException:
    try:
        return call()
    except Exception as exc:
        return exc


def check(compiled: Any, table: Table, offset: int, rows: list[Any]) -> bool:
    """Assert the contract for one batch; True when the reference accepted it."""
    expected = _outcome(lambda: b"".join(map(binary_encoder(table, offset), rows)))
    answer = _outcome(lambda: compiled.encode(rows, _kinds(table), offset))
    where = f"kinds={_kinds(table)!r} offset={offset} rows={rows!r}"
    if isinstance(expected, BaseException):
        assert isinstance(answer, TypeError | OverflowError | ValueError), (
            f"the Python encoder refuses ({expected!r}), C answered {answer!r}: {where}"
        )
        return False
    assert not isinstance(answer, BaseException), f"the Python encoder accepts, C raised {answer!r}: {where}"
    assert answer == expected, where
    return True


# --- values ------------------------------------------------------------------------------------------


class Untruthful:
    """A value whose truth cannot be taken: a boolean column holding it is refused by both encoders."""

    def __bool__(self) -> bool:
        raise ValueError("no truth here")

    def __repr__(self) -> str:
        return "Untruthful()"


def _nan(bits: int) -> float:
    value = struct.unpack(">d", struct.pack(">Q", bits))[0]
    assert math.isnan(value)
    return value


# NaNs of both signs, quiet and with payloads: the bytes sent must keep the bit pattern.
NANS = [math.nan, -math.nan, _nan(0x7FF8000000000001), _nan(0xFFF8000000000ABC), _nan(0x7FF0000000000001)]


def edge_values(column: Column) -> tuple[list[Any], list[Any]]:
    """(values the Python encoder accepts, values it refuses) for a column, at and beyond its limits."""
    if column.kind in (INT, TS):
        bits = 8 * WIDTHS.get(column.pg_type, 8)
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        good = [low, low + 1, -1, 0, 1, high - 1, high, True, False]
        bad = [low - 1, high + 1, 2**63, -(2**63) - 1, 2**64, -(2**64), 2**100, -(2**100), 1.0, 0.0]
        bad += [b"1", "1", b"", [1]]
        return good, bad
    if column.kind == BOOL:
        good = [0, 1, 2, -1, True, False, 2**100, b"", b"\x00", b"x", "", "x", 0.0, -0.0, math.nan, []]
        return good, [Untruthful()]
    if column.kind == REAL:
        good = [0.0, -0.0, math.inf, -math.inf, *NANS, 5e-324, -5e-324, 1.7976931348623157e308, 0.1]
        good += [0, 1, -1, True, False, 2**53 + 1, 2**63, -(2**64), 2**1023, 2**1024 - 2**970 - 1]
        bad = [2**1024, -(2**1024), 2**1024 - 2**970, 10**400, "1.0", "nan", b"1.0", b"", [1.0]]
        return good, bad
    good = [b"", b"\x00", b"\\", b"\xff\xfe", b"{}", "é😀".encode(), bytes(range(256)), b"x" * 70_000]
    bad = ["", "text", 0, 1, 1.5, True, [b"x"], (b"x",)]
    return good, bad


def random_value(rng: random.Random, column: Column) -> Any:
    """A value the Python encoder accepts for the column (None included)."""
    pick = rng.random()
    if pick < 0.15:
        return None
    if column.kind in (INT, TS):
        bits = 8 * WIDTHS.get(column.pg_type, 8)
        if pick < 0.3:
            return rng.choice(edge_values(column)[0])
        return rng.randint(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) >> rng.randrange(bits)
    if column.kind == BOOL:
        return rng.choice([0, 1, True, False, rng.randint(-(2**70), 2**70), rng.randint(-3, 3)])
    if column.kind == REAL:
        if pick < 0.3:
            return rng.choice(edge_values(column)[0])
        if pick < 0.45:
            return rng.randint(-(2**80), 2**80)
        if pick < 0.6:
            return rng.uniform(-1e6, 1e6)
        # Any 64-bit pattern: subnormals, infinities and NaN payloads included.
        return struct.unpack(">d", rng.randbytes(8))[0]
    length = rng.choice([0, 1, 2, rng.randrange(64), rng.randrange(3000)])
    if pick < 0.5:
        return rng.randbytes(length)  # mostly not UTF-8: the encoder does not look
    return "".join(rng.choice('aé\\\t\n\x00"{}😀Ж ') for _ in range(length)).encode()


def random_bad_value(rng: random.Random, column: Column) -> Any:
    return rng.choice(edge_values(column)[1])


def random_bad_row(rng: random.Random, table: Table, offset: int, row: tuple[Any, ...]) -> Any:
    """A row of the wrong shape: too short, or no sequence at all."""
    if rng.random() < 0.6:
        return row[: rng.randrange(offset + len(table.columns))]
    return rng.choice([None, 7, 2.5, object()])


def random_table(rng: random.Random) -> Table:
    columns = [rng.choice(COLUMNS) for _ in range(rng.randint(1, 10))]
    return _table(columns)


def random_rows(rng: random.Random, table: Table, offset: int, count: int, damage: float) -> list[Any]:
    """`count` rows; with probability `damage` per value (and per row, for its shape) something the
    Python encoder refuses."""
    rows: list[Any] = []
    for _ in range(count):
        prefix = tuple(rng.choice([0, 1, None, b"x"]) for _ in range(offset))
        values = tuple(
            random_bad_value(rng, column) if rng.random() < damage else random_value(rng, column)
            for column in table.columns
        )
        row = prefix + values
        if rng.random() < damage / 3:
            row = random_bad_row(rng, table, offset, row)
        elif rng.random() < 0.1:
            row = (*row, "extra", 1)  # longer rows are fine: only the table's columns are read
        rows.append(row)
    return rows


# --- the contract ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [0, 1])
def test_every_edge_value_alone(compiled, offset):
    """Each value at or beyond its column's limits, in a row of one column and in a row of all kinds."""
    rng = random.Random(7 + offset)
    full = _table(COLUMNS)
    for position, column in enumerate(COLUMNS):
        good, bad = edge_values(column)
        for value in good + bad:
            accepted = check(compiled, _table([column]), offset, [(b"p",) * offset + (value,)])
            assert accepted == any(value is g for g in good), f"{column.pg_type} {value!r}"
            row = [random_value(rng, c) for c in COLUMNS]
            row[position] = value
            check(compiled, full, offset, [(None,) * offset + tuple(row)])
        assert check(compiled, _table([column]), offset, [(b"p",) * offset + (None,)])


@pytest.mark.parametrize("offset", [0, 1])
def test_random_batches_agree(compiled, offset):
    """Seeded random tables and batches, some with a value or a row the Python encoder refuses."""
    rng = random.Random(2025 + offset)
    accepted = refused = 0
    for _ in range(1500):
        table = random_table(rng)
        rows = random_rows(rng, table, offset, rng.choice([0, 1, 2, 3, 8]), rng.choice([0.0, 0.02, 0.1]))
        if check(compiled, table, offset, rows):
            accepted += 1
        else:
            refused += 1
    assert accepted > 300
    assert refused > 300


def test_a_large_batch_agrees(compiled):
    rng = random.Random(11)
    table = _table(COLUMNS * 2)
    rows = random_rows(rng, table, 1, 3000, damage=0.0)
    assert check(compiled, table, 1, rows)
    # One bad value in the last row refuses the whole batch.
    last = list(rows[-1])
    last[1 + 6] = "not bytes"
    assert not check(compiled, table, 1, [*rows[:-1], tuple(last)])


@pytest.mark.parametrize("offset", [0, 1])
def test_empty_batch(compiled, offset):
    table = _table(COLUMNS)
    assert compiled.encode([], _kinds(table), offset) == b""
    assert binary_batch_encoder(table, offset)([]) == b""


def test_batch_encoder_takes_the_lists_sqlite_returns(tmp_path):
    """The loader hands `binary_batch_encoder` what `fetchmany` returns: a list of tuples."""
    table = _table([COLUMNS[0], COLUMNS[4], COLUMNS[5], COLUMNS[6]])
    conn = sqlite3.connect(tmp_path / "feed.sqlite")
    conn.execute("CREATE TABLE t (q INTEGER, b BOOLEAN_INT, d REAL, s TEXT)")
    conn.executemany(
        "INSERT INTO t VALUES (?, ?, ?, ?)",
        [(2**63 - 1, 1, -0.0, "ключ\\"), (None, None, None, None), (-5, 0, 3, ""), (0, 7, 1e300, "😀")],
    )
    conn.text_factory = bytes
    batch = conn.execute("SELECT * FROM t ORDER BY rowid").fetchmany(10)
    conn.close()
    assert isinstance(batch, list)
    encoded = binary_batch_encoder(table)(batch)
    assert encoded == b"".join(map(binary_encoder(table), batch))
    assert b"\x00\x04" + b"\xff\xff\xff\xff" * 4 in encoded  # the row of NULLs


def test_python_fallback_gives_the_same_bytes(compiled, monkeypatch):
    rng = random.Random(5)
    table = _table(COLUMNS)
    rows = random_rows(rng, table, 1, 300, damage=0.0)
    with_c = binary_batch_encoder(table, 1)(rows)
    bad = [*rows[:5], (None, *rows[5][1:7], "not bytes", *rows[5][8:])]  # text given as str
    with pytest.raises((TypeError, OverflowError, ValueError)):
        binary_batch_encoder(table, 1)(bad)
    monkeypatch.setattr(rowcode, "_copybin", None)
    fallback = binary_batch_encoder(table, 1)
    assert fallback(rows) == with_c
    assert fallback([]) == b""
    with pytest.raises(TypeError):
        fallback(bad)


# --- PostgreSQL --------------------------------------------------------------------------------------------


@pytest.fixture
def pg(pg_only_settings):
    target = pg_target(pg_only_settings)
    with psycopg.connect(**target.connect_kwargs(), autocommit=True) as conn:
        yield conn


def _pg_value(rng: random.Random, column: Column) -> Any:
    """A value PostgreSQL takes as well: text is UTF-8 without NUL, JSON is JSON, timestamps fit datetime."""
    if rng.random() < 0.15:
        return None
    if column.kind == TS:
        low = int((datetime(1, 1, 2, tzinfo=UTC) - EPOCH) / timedelta(microseconds=1))
        high = int((datetime(9999, 12, 30, tzinfo=UTC) - EPOCH) / timedelta(microseconds=1))
        return rng.choice([low, high, 0, -1, 1, rng.randint(low, high)])
    if column.kind == TEXT:
        return "".join(rng.choice("aé\\\t\n\r\"'{}😀Ж N") for _ in range(rng.randrange(40))).encode()
    if column.kind == JSON:
        document = {
            "k": rng.randint(-(2**70), 2**70),
            "s": "".join(rng.choice('aé\\"😀\n') for _ in range(rng.randrange(10))),
            "l": [True, None, rng.randrange(10)][: rng.randrange(4)],
        }
        return json.dumps(
            rng.choice([document, [document], "x", 0, None]), ensure_ascii=rng.random() < 0.5
        ).encode()
    return random_value(rng, column)


def _expected(column: Column, value: Any) -> Any:
    if value is None:
        return None
    if column.kind == TS:
        return EPOCH + timedelta(microseconds=value)
    if column.kind == BOOL:
        return bool(value)
    if column.kind == REAL:
        return float(value)
    if column.kind == TEXT:
        return value.decode()
    if column.kind == JSON:
        return ("document", json.loads(value))  # not None for a JSON null
    return int(value)


def _same(column: Column, got: Any, expected: Any) -> bool:
    if column.kind == JSON and got is not None:  # the text of a document (JSON null included)
        return isinstance(got, str) and expected == ("document", json.loads(got))
    if column.kind == REAL and got is not None and expected is not None:
        return struct.pack(">d", got) == struct.pack(">d", expected) or (
            math.isnan(got) and math.isnan(expected)
        )
    return type(got) is type(expected) and got == expected


def test_postgresql_reads_back_what_was_sent(pg):
    """A binary COPY of every kind (with the row prefix of `--on-nul strip`) reads back as the values sent."""
    rng = random.Random(99)
    table = _table(COLUMNS)
    rows = []
    for n in range(400):
        rows.append((rng.choice([0, 1]), n, *(_pg_value(rng, column) for column in COLUMNS[1:])))
    rows.append((0, len(rows), *(None for _ in COLUMNS[1:])))
    payload = binary_batch_encoder(table, 1)(rows)
    assert payload == b"".join(map(binary_encoder(table, 1), rows))
    names = ", ".join(column.name for column in COLUMNS)
    pg.execute(f"CREATE TEMP TABLE copybin ({', '.join(f'{c.name} {c.pg_type}' for c in COLUMNS)})")
    with pg.cursor() as cursor, cursor.copy(f"COPY copybin ({names}) FROM STDIN (FORMAT binary)") as copy:
        copy.write(BINARY_SIGNATURE + payload + BINARY_TRAILER)
    # jsonb comes back as its text, read with json.loads (exact for big integers, unlike a float).
    columns = names.replace(", j", ", j::text")
    back = pg.cursor(binary=True).execute(f"SELECT {columns} FROM copybin ORDER BY q").fetchall()
    assert len(back) == len(rows)
    for sent, got in zip(rows, back, strict=True):
        for column, value, read in zip(COLUMNS, sent[1:], got, strict=True):
            expected = _expected(column, value)
            assert _same(column, read, expected), (
                f"{column.name} {column.pg_type}: sent {value!r}, read {read!r}"
            )
    # The NaNs and the signed zeros went through as well (some of the rows hold them).
    doubles = [row[5] for row in back if row[5] is not None]
    assert any(math.isnan(d) for d in doubles)
    assert any(d == 0 and math.copysign(1, d) < 0 for d in doubles)
