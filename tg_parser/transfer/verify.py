"""Compare a table's checksums on both sides and, when they differ, find the rows that differ.

Narrowing works on key ranges, never on whole tables: the loader already summed the source per range
(64 consecutive key ranges); the target sums the same ranges in SQL; only ranges whose sums differ are
cut again (16 ways, at keys sampled from the side holding more rows) until a range is small enough to
compare row by row (key order, bytewise for text on both sides). So one changed row among a million
costs one extra scan of ~1/64 of the table, not a second full comparison.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tg_parser.transfer.checksum import RangedSum, Sum, source_row_hashes, source_sum
from tg_parser.transfer.introspect import KeyRange
from tg_parser.transfer.schema import Table
from tg_parser.transfer.source import SqliteSource
from tg_parser.transfer.target import PostgresTarget

LEAF_ROWS = 2000  # compare row by row below this many rows (both sides together)
SPLIT = 16


@dataclass(frozen=True)
class Difference:
    key: dict[str, Any]
    problem: str  # "differs" | "missing in target" | "only in target"

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "problem": self.problem}


def target_sum(target: PostgresTarget, table: Table, bounds: KeyRange | None = None) -> Sum:
    rows, value = target.checksum(table, bounds)
    return Sum(rows, value)


def _split(bounds: KeyRange, cuts: list[tuple[Any, ...]]) -> list[KeyRange]:
    edges = [bounds.lo, *cuts, bounds.hi]
    return [KeyRange(edges[i], edges[i + 1]) for i in range(len(edges) - 1) if edges[i] != edges[i + 1]]


def _merge(
    table: Table,
    left: Iterator[tuple[tuple[Any, ...], int]],
    right: Iterator[tuple[tuple[Any, ...], int]],
) -> Iterator[Difference]:
    sentinel = None
    a = next(left, sentinel)
    b = next(right, sentinel)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            assert a is not None
            yield Difference(table.key_dict(a[0]), "missing in target")
            a = next(left, sentinel)
        elif a is None or b[0] < a[0]:
            yield Difference(table.key_dict(b[0]), "only in target")
            b = next(right, sentinel)
        else:
            if a[1] != b[1]:
                yield Difference(table.key_dict(a[0]), "differs")
            a = next(left, sentinel)
            b = next(right, sentinel)


def narrow(
    source: SqliteSource,
    target: PostgresTarget,
    table: Table,
    source_ranges: RangedSum,
    *,
    strip_nul: bool,
    limit: int = 50,
) -> list[Difference]:
    """The keys of rows that differ between the two sides (at most `limit`)."""
    queue: deque[tuple[KeyRange, int, int]] = deque()
    if source_ranges.cuts:
        for bounds, part in zip(source_ranges.ranges(table), source_ranges.parts, strict=True):
            theirs = target_sum(target, table, bounds)
            if not part.same(theirs):
                queue.append((bounds, part.rows, theirs.rows))
    else:
        queue.append((KeyRange(), source_ranges.total.rows, target.count(table)))
    found: list[Difference] = []
    while queue and len(found) < limit:
        bounds, ours, theirs = queue.popleft()
        if ours + theirs <= LEAF_ROWS:
            left = iter(source_row_hashes(source, table, bounds, strip_nul=strip_nul))
            right = target.row_hashes(table, bounds)
            for difference in _merge(table, left, right):
                found.append(difference)
                if len(found) >= limit:
                    break
            continue
        step = max(ours, theirs) // SPLIT + 1
        cuts = (source.boundaries if ours >= theirs else target.boundaries)(table, bounds, step)
        for sub in _split(bounds, cuts):
            mine = source_sum(source, table, sub, strip_nul=strip_nul)
            other = target_sum(target, table, sub)
            if not mine.same(other):
                queue.append((sub, mine.rows, other.rows))
    return found
