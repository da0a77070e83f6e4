"""Stream one table from SQLite into PostgreSQL COPY.

Rows are read in primary-key order in batches (`fetchmany`), so memory stays flat whatever the table
size, and the target's heap ends up in key order. Two COPY formats:

* **binary** (default, measured cheaper for the server): psycopg writes each row (`Copy.write_row`,
  in C) with the binary dumpers `rowcode.copy_fields` names per column: text goes out as the stored
  UTF-8 bytes with a length, no escaping; integers, booleans and doubles as fixed-width numbers;
  timestamps as microseconds since 2000 (computed by SQLite from the stored text); JSON as jsonb's
  binary format (version 1, then the text, which PostgreSQL parses as for text COPY). A value of the
  wrong type raises and stops the load (the scan then names it); an integer beyond an integer or
  smallint column wraps around instead, which the scan refuses just the same. A compiled encoder of
  our own (`_copybin.c`, a batch per call) made the whole run only ~2-6 % faster (figures in the
  migration guide), so it was dropped.
* **text**: the classic tab-separated lines, backslash/tab/newline/CR escaped, generated per table
  (`rowcode.text_encoder`) and sent in blocks of ~256 KiB.

The loader computes no checksum: the source's come from the scan of the raw SQLite values, and the
target's are read back from PostgreSQL afterwards, so a fault in this encoding shows up as a mismatch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from tg_parser.transfer.rowcode import batched, copy_fields, strip_nuls, text_encoder
from tg_parser.transfer.schema import Table
from tg_parser.transfer.source import SqliteSource
from tg_parser.transfer.target import PostgresTarget

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
    batch_size: int = 500,
    binary: bool = True,
    on_rows: Callable[[int], None] | None = None,
    between_blocks: Callable[[], None] | None = None,
) -> LoadResult:
    """COPY one table; returns rows and bytes sent. Runs inside the caller's transaction.

    `between_blocks` runs after each batch (binary) or block (text) is handed over (the runner looks
    at the scan's results there and raises to stop the load at the first offender).
    """
    if not binary:
        return _load_text(source, target, table, strip_nul, batch_size, on_rows, between_blocks)
    started = time.perf_counter()
    rows = 0
    with target.copy_rows(table, copy_fields(table)) as copy:
        write_row = copy.write_row
        for batch in source.feed_batches(table, binary=True, nul_flag=strip_nul, batch=batch_size):
            if strip_nul:  # each row starts with a has-NUL flag
                batch = [(strip_nuls(table, row, 1) if row[0] else row)[1:] for row in batch]
            for row in batch:
                write_row(row)
            rows += len(batch)
            if on_rows is not None:
                on_rows(len(batch))
            if between_blocks is not None:
                between_blocks()
    return LoadResult(rows, copy.sent, time.perf_counter() - started)


def _load_text(
    source: SqliteSource,
    target: PostgresTarget,
    table: Table,
    strip_nul: bool,
    batch_size: int,
    on_rows: Callable[[int], None] | None,
    between_blocks: Callable[[], None] | None,
) -> LoadResult:
    started = time.perf_counter()
    offset = 1 if strip_nul else 0  # with --on-nul strip, each row starts with a has-NUL flag
    encode = batched(text_encoder(table, offset))
    block: list[bytes] = []
    block_bytes = sent = rows = reported = 0
    with target.copy(table, binary=False) as copy:
        for batch in source.feed_batches(table, binary=False, nul_flag=strip_nul, batch=batch_size):
            if strip_nul:
                batch = [strip_nuls(table, row, 1) if row[0] else row for row in batch]
            encoded = encode(batch)
            block.append(encoded)
            block_bytes += len(encoded)
            rows += len(batch)
            if block_bytes >= BLOCK_BYTES:
                copy.write(b"".join(block))
                sent += block_bytes
                block.clear()
                block_bytes = 0
                if on_rows is not None:
                    on_rows(rows - reported)
                    reported = rows
                if between_blocks is not None:
                    between_blocks()
        if block:
            data = b"".join(block)
            copy.write(data)
            sent += len(data)
    if on_rows is not None and rows > reported:
        on_rows(rows - reported)
    return LoadResult(rows, sent, time.perf_counter() - started)
