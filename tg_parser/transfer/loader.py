"""Stream one table from SQLite into PostgreSQL COPY.

Rows are read in primary-key order in batches (`fetchmany`), so memory stays flat whatever the table
size, and the target's heap ends up in key order. Each batch is encoded in one call (`rowcode.py`: the
compiled `_copybin` for binary COPY when it is built, else a function generated for the table, row by
row) and the encoded rows are sent in blocks of ~256 KiB. Two COPY formats;
`bench_migrate.py --variants` measures both (figures in the migration guide):

* **binary** (default, measured cheaper for the server): text goes out as the stored UTF-8 bytes with a
  length, no escaping; integers, booleans and doubles as fixed-width numbers; timestamps as
  microseconds since 2000 (computed by SQLite from the stored text); JSON as jsonb's binary format
  (version 1, then the text, which PostgreSQL parses as for text COPY).
* **text**: the classic tab-separated lines, backslash/tab/newline/CR escaped.

The loader computes no checksum: the source's come from the scan of the raw SQLite values, and the
target's are read back from PostgreSQL afterwards, so a fault in this encoding shows up as a mismatch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from tg_parser.transfer.rowcode import (
    BINARY_SIGNATURE,
    BINARY_TRAILER,
    batched,
    binary_batch_encoder,
    strip_nuls,
    text_encoder,
)
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
    batch_size: int = 2000,
    binary: bool = True,
    on_rows: Callable[[int], None] | None = None,
    between_blocks: Callable[[], None] | None = None,
) -> LoadResult:
    """COPY one table; returns rows and bytes sent. Runs inside the caller's transaction.

    `between_blocks` runs after each block is handed to the server (the runner looks at the scan's
    results there and raises to stop the load at the first offender).
    """
    started = time.perf_counter()
    offset = 1 if strip_nul else 0  # with --on-nul strip, each row starts with a has-NUL flag
    encode = binary_batch_encoder(table, offset) if binary else batched(text_encoder(table, offset))
    block: list[bytes] = [BINARY_SIGNATURE] if binary else []
    block_bytes = len(BINARY_SIGNATURE) if binary else 0
    sent = rows = reported = 0
    with target.copy(table, binary=binary) as copy:
        for batch in source.feed_batches(table, binary=binary, nul_flag=strip_nul, batch=batch_size):
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
        if binary:
            block.append(BINARY_TRAILER)
        if block:
            data = b"".join(block)
            copy.write(data)
            sent += len(data)
    if on_rows is not None and rows > reported:
        on_rows(rows - reported)
    return LoadResult(rows, sent, time.perf_counter() - started)
