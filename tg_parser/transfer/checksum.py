"""Row hashes and table checksums from the SQLite side (the PostgreSQL side is one SQL aggregate).

Clean rows are rendered by the generated `rowcode.renderer` and hashed. `python_row()` renders a whole
row value by value from its raw values; it serves rows that are repaired (NUL stripped) and, in tests,
proves that the generated renderer agrees with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tg_parser.transfer.canonical import MOD, canonical_json, real_text, row_hash
from tg_parser.transfer.canonical import field as render_field
from tg_parser.transfer.introspect import KeyRange
from tg_parser.transfer.rowcode import renderer
from tg_parser.transfer.schema import BOOL, INT, JSON, REAL, TEXT, TS, Column, Table
from tg_parser.transfer.source import SqliteSource, normalise_key


@dataclass
class Sum:
    rows: int = 0
    value: int = 0

    def add(self, row_hash_value: int) -> None:
        self.rows += 1
        self.value += row_hash_value

    @property
    def checksum(self) -> int:
        return self.value % MOD

    def same(self, other: Sum) -> bool:
        return self.rows == other.rows and self.checksum == other.checksum


@dataclass
class RangedSum:
    """A table's total plus the sums of consecutive key ranges cut at `cuts` (raw key tuples)."""

    cuts: list[tuple[Any, ...]] = field(default_factory=list)
    total: Sum = field(default_factory=Sum)
    parts: list[Sum] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.parts:
            self.parts = [Sum() for _ in range(len(self.cuts) + 1)]

    def ranges(self, table: Table, *, raw: bool = False) -> list[KeyRange]:
        """The key ranges between the cuts; `raw` keeps text keys as the bytes SQLite stores."""
        cuts = self.cuts if raw else [normalise_key(table, c) for c in self.cuts]
        bounds = [None, *cuts, None]
        return [KeyRange(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


def python_value(column: Column, raw: Any, *, strip_nul: bool) -> str | None:
    """The canonical text (None for NULL) of one raw SQLite value of a checked row."""
    if raw is None:
        return None
    if column.kind in (INT, BOOL):
        return str(int(raw))
    if column.kind == REAL:
        return real_text(float(raw))
    decoded = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    if column.kind == TS:
        return decoded
    if column.kind == JSON:
        return canonical_json(decoded, strip_nuls=strip_nul)
    if column.kind == TEXT:
        return decoded.replace("\x00", "") if strip_nul else decoded
    raise ValueError(column.kind)


def python_row(table: Table, raw: Iterable[Any], *, strip_nul: bool) -> bytes:
    """The canonical rendering of one row from its raw values."""
    return b"".join(
        render_field(column.kind, python_value(column, value, strip_nul=strip_nul))
        for column, value in zip(table.columns, raw, strict=True)
    )


def _hashed_rows(
    source: SqliteSource, table: Table, bounds: KeyRange | None, *, strip_nul: bool
) -> Iterator[tuple[tuple[Any, ...], int]]:
    width = len(table.key)
    render = renderer(table, width + 1)
    for row in source.hash_rows(table, bounds):
        key = row[:width]
        if row[width]:  # holds NUL characters: only reached with --on-nul strip (else refused earlier)
            rendering = python_row(table, row[width + 1 :], strip_nul=strip_nul)
            yield key, row_hash(rendering)
        else:
            yield key, row_hash(render(row))


def source_sum(source: SqliteSource, table: Table, bounds: KeyRange | None, *, strip_nul: bool) -> Sum:
    """Rows and checksum of a key range of the source (used while narrowing a mismatch)."""
    total = Sum()
    for _, value in _hashed_rows(source, table, bounds, strip_nul=strip_nul):
        total.add(value)
    return total


def source_row_hashes(
    source: SqliteSource, table: Table, bounds: KeyRange | None, *, strip_nul: bool
) -> Iterator[tuple[tuple[Any, ...], int]]:
    """(key, row hash) in key order over a range, keys normalised to str/int."""
    for key, value in _hashed_rows(source, table, bounds, strip_nul=strip_nul):
        yield normalise_key(table, key), value
