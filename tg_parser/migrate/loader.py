"""Stream one table from SQLite into PostgreSQL COPY.

Rows are read in primary-key order in batches (`fetchmany`), so memory stays flat whatever the table
size, and the target's heap ends up in key order. Two COPY encodings are implemented; `bench_migrate.py`
measures both (figures in the migration guide):

* **text** (default, measured faster): SQLite itself formats each row as one COPY text line (values
  escaped, `\\N` for NULL, timestamps and JSON passed as the text PostgreSQL parses); Python only joins
  lines into blocks of ~256 KiB and hands them to `Copy.write()`.
* **binary**: each value is converted in Python (datetime, bool, raw UTF-8 text and raw JSON bytes behind
  pass-through dumpers) and sent with `Copy.write_row()` after `Copy.set_types()`; binary COPY applies no
  casts, so the types must match the columns exactly.

The loader computes no checksum: the source's were computed in preflight from the raw SQLite values,
and the target's are read back from PostgreSQL afterwards, so a fault in this conversion shows up as a
mismatch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.adapt import Dumper
from psycopg.pq import Format

from tg_parser.migrate import catalog
from tg_parser.migrate.checksum import python_row
from tg_parser.migrate.errors import MigrationError
from tg_parser.migrate.schema import BOOL, PG_COPY_TYPES, REAL, TS, Table
from tg_parser.migrate.source import SqliteSource
from tg_parser.migrate.target import PostgresTarget

BLOCK_BYTES = 256 * 1024


@dataclass
class LoadResult:
    rows: int
    bytes: int
    seconds: float


def load_table(
    source: SqliteSource,
    target: PostgresTarget,
    table: Table,
    *,
    strip_nul: bool,
    batch_size: int = 2000,
    binary: bool = False,
    on_rows: Callable[[int], None] | None = None,
) -> LoadResult:
    """COPY one table; returns rows and bytes sent. Runs inside the caller's transaction."""
    started = time.perf_counter()
    loader = _load_binary if binary else _load_text
    rows, sent = loader(source, target, table, strip_nul, batch_size, on_rows)
    return LoadResult(rows, sent, time.perf_counter() - started)


def _load_text(
    source: SqliteSource,
    target: PostgresTarget,
    table: Table,
    strip_nul: bool,
    batch_size: int,
    on_rows: Callable[[int], None] | None,
) -> tuple[int, int]:
    width = len(table.key)
    block: list[bytes] = []
    block_bytes = sent = rows = reported = 0
    with target.copy(table) as copy:
        for row in source.copy_rows(table, nul_flag=strip_nul, batch=batch_size):
            if strip_nul:
                line = row[width + 1]
                if row[width]:  # holds NULs: this row is formatted in Python, without them
                    _, line = python_row(table, source.raw_row(table, row[:width]), strip_nul=True)
            else:
                line = row[0]
            block.append(line)
            block_bytes += len(line)
            rows += 1
            if block_bytes >= BLOCK_BYTES:
                copy.write(b"".join(block))
                sent += block_bytes
                block.clear()
                block_bytes = 0
                if on_rows is not None:
                    on_rows(rows - reported)
                    reported = rows
        if block:
            copy.write(b"".join(block))
            sent += block_bytes
    if on_rows is not None and rows > reported:
        on_rows(rows - reported)
    return rows, sent


class _BytesTextDumper(Dumper):
    """Text already encoded as UTF-8 by SQLite, passed through untouched (binary format of text)."""

    format = Format.BINARY

    def dump(self, obj: Any) -> bytes:
        return bytes(obj)


class _RawJsonbDumper(Dumper):
    """JSON text from SQLite as jsonb's binary format: version byte 1, then the text."""

    format = Format.BINARY

    def dump(self, obj: Any) -> bytes:
        return b"\x01" + bytes(obj)


def _ts(raw: bytes) -> datetime:
    return datetime.fromisoformat(raw.decode())


def _load_binary(
    source: SqliteSource,
    target: PostgresTarget,
    table: Table,
    strip_nul: bool,
    batch_size: int,
    on_rows: Callable[[int], None] | None,
) -> tuple[int, int]:
    if strip_nul:
        raise MigrationError("binary COPY does not support --on-nul strip", "use the text format")
    converters: list[Callable[[Any], Any] | None] = []
    for column in table.columns:
        if column.kind == BOOL:
            converters.append(bool)
        elif column.kind == TS:
            converters.append(_ts)
        elif column.kind == REAL:
            converters.append(float)
        else:  # INT, TEXT (bytes pass through), JSON (bytes behind the jsonb dumper)
            converters.append(None)
    rows = sent = pending = 0
    cursor = target.conn.cursor()
    text_dumper = type("TextBytes", (_BytesTextDumper,), {"oid": cursor.adapters.types["text"].oid})
    jsonb_dumper = type("RawJsonb", (_RawJsonbDumper,), {"oid": cursor.adapters.types["jsonb"].oid})
    cursor.adapters.register_dumper(None, text_dumper)
    cursor.adapters.register_dumper(None, jsonb_dumper)
    statement = catalog.sqlite_binary_stream_sql(table)
    with cursor.copy(catalog.pg_copy_sql(table, binary=True)) as copy:
        copy.set_types([PG_COPY_TYPES[c.pg_type] for c in table.columns])
        for values in source.fetch(statement, [], batch_size):
            copy.write_row(
                [
                    v if conv is None or v is None else conv(v)
                    for conv, v in zip(converters, values, strict=True)
                ]
            )
            rows += 1
            if on_rows is not None and rows - pending >= 5000:
                on_rows(rows - pending)
                pending = rows
    if on_rows is not None and rows > pending:
        on_rows(rows - pending)
    return rows, sent
