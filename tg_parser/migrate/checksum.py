"""Row hashes and table checksums from the SQLite side (the PostgreSQL side is one SQL aggregate).

`SourceRenderer` turns a streamed row (SQLite-rendered segments plus raw JSON/REAL values) into the
canonical rendering of `canonical.py` and hashes it. `python_row()` renders a whole row in Python from its
raw values; it serves rows that are repaired (NUL stripped) and, in tests, proves that the SQL rendering
and the Python rendering agree.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tg_parser.migrate.canonical import MOD, canonical_json, json_field, real_text, row_hash
from tg_parser.migrate.canonical import field as render_field
from tg_parser.migrate.catalog import KeyRange, render_parts
from tg_parser.migrate.schema import BOOL, INT, JSON, REAL, TEXT, TS, Column, Table
from tg_parser.migrate.source import SqliteSource, normalise_key


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

    def add(self, key: tuple[Any, ...], value: int) -> None:
        self.total.add(value)
        if self.cuts:
            self.parts[bisect.bisect_right(self.cuts, key)].add(value)

    def ranges(self, table: Table, *, raw: bool = False) -> list[KeyRange]:
        """The key ranges between the cuts; `raw` keeps text keys as the bytes SQLite stores."""
        cuts = self.cuts if raw else [normalise_key(table, c) for c in self.cuts]
        bounds = [None, *cuts, None]
        return [KeyRange(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


def _json_renderer(strip_nul: bool) -> Callable[[Any], bytes]:
    def render(raw: Any) -> bytes:
        return b"N" if raw is None else json_field(raw, strip_nuls=strip_nul)

    return render


def _real_renderer(raw: Any) -> bytes:
    return render_field("real", None if raw is None else real_text(float(raw)))


class NeedsLook(Exception):
    """A row the fast path cannot vouch for; the scan examines it column by column."""


class SourceRenderer:
    """Hashes the rendering parts selected by `catalog.sqlite_stream_sql` for one table."""

    def __init__(self, table: Table, *, strip_nul: bool) -> None:
        parts = render_parts(table)
        self.width = len(parts)
        self.renderers: list[Callable[[Any], bytes] | None] = [
            None if column is None else (_json_renderer(strip_nul) if column.kind == JSON else _real_renderer)
            for _, column in parts
        ]
        self.simple = self.width == 1 and self.renderers[0] is None

    def hash_checked(self, parts: tuple[Any, ...] | list[Any]) -> int:
        """Like hash(), but raises NeedsLook for a row to examine column by column: text that is not
        UTF-8 or holds NUL characters, JSON with `\\u0000` or that jsonb would reject."""
        for part, fn in zip(parts, self.renderers, strict=True):
            if fn is None:
                if b"\x00" in part:
                    raise NeedsLook
                part.decode()  # UnicodeDecodeError: not UTF-8
            elif part.__class__ is bytes and b"\\u0000" in part:  # JSON (REAL parts are floats)
                raise NeedsLook
        return self.hash(parts)

    def hash(self, parts: tuple[Any, ...] | list[Any]) -> int:
        if self.simple:
            return row_hash(parts[0])
        return row_hash(
            b"".join([p if fn is None else fn(p) for fn, p in zip(self.renderers, parts, strict=True)])
        )


def _escape_copy(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def python_value(column: Column, raw: Any, *, strip_nul: bool) -> tuple[str | None, str]:
    """(canonical text or None for NULL, COPY text) of one raw SQLite value of a checked row."""
    if raw is None:
        return None, "\\N"
    if column.kind in (INT, BOOL):
        text = str(int(raw))
        return text, text
    if column.kind == REAL:
        return real_text(float(raw)), repr(float(raw))
    decoded = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    if column.kind == TS:
        return decoded, decoded
    if column.kind == JSON:
        canonical = canonical_json(decoded, strip_nuls=strip_nul)
        return canonical, _escape_copy(canonical)
    if column.kind == TEXT:
        if strip_nul:
            decoded = decoded.replace("\x00", "")
        return decoded, _escape_copy(decoded)
    raise ValueError(column.kind)


def python_row(table: Table, raw: Iterable[Any], *, strip_nul: bool) -> tuple[bytes, bytes]:
    """(canonical rendering, COPY text line) of one row from its raw values."""
    rendering: list[bytes] = []
    line: list[str] = []
    for column, value in zip(table.columns, raw, strict=True):
        canonical, copy_text = python_value(column, value, strip_nul=strip_nul)
        rendering.append(render_field(column.kind, canonical))
        line.append(copy_text)
    return b"".join(rendering), ("\t".join(line) + "\n").encode()


def _hashed_rows(
    source: SqliteSource, table: Table, bounds: KeyRange | None, *, strip_nul: bool
) -> Iterator[tuple[tuple[Any, ...], int]]:
    renderer = SourceRenderer(table, strip_nul=strip_nul)
    width = len(table.key)
    for row in source.hash_rows(table, bounds):
        key = row[:width]
        if row[width]:  # holds NUL characters: only reached with --on-nul strip (else refused earlier)
            rendering, _ = python_row(table, source.raw_row(table, key), strip_nul=strip_nul)
            yield key, row_hash(rendering)
        else:
            yield key, renderer.hash(row[width + 1 :])


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
