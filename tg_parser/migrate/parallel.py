"""The preflight pass over all tables, cut into key ranges and spread over worker processes.

Rendering JSON the way jsonb prints it is the costly part of a checksum (pure CPU, per document), so the
pass runs in the parent and `workers - 1` helper processes (`worker.py`), each with its own read-only
SQLite connection. They all read the same data: the parent holds the write lock for the whole run (see
`source.py`), so nobody can commit in between. Each table is cut into RANGES key ranges (every n-th key,
read from the primary-key index); the per-range sums are kept, and later let a mismatch be narrowed
without hashing the source again.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from tg_parser.migrate.checksum import RangedSum
from tg_parser.migrate.errors import MigrationError
from tg_parser.migrate.scan import ScanResult, Unit, UnitResult, check_unit, orphans
from tg_parser.migrate.schema import Table
from tg_parser.migrate.source import SqliteSource
from tg_parser.migrate.worker import receive, send

RANGES = 64


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


def plan(
    source: SqliteSource, tables: list[Table]
) -> tuple[list[Unit], dict[str, RangedSum], dict[str, int]]:
    """Cut every table into key ranges; returns the units, empty ranged sums and the row counts."""
    units: list[Unit] = []
    sums: dict[str, RangedSum] = {}
    counts: dict[str, int] = {}
    for table in tables:
        rows = source.count(table)
        counts[table.qualified] = rows
        cuts = source.raw_boundaries(table, rows // RANGES) if rows >= 2 * RANGES else []
        ranged = RangedSum(cuts=cuts)
        sums[table.qualified] = ranged
        bounds = ranged.ranges(table, raw=True)
        for index, key_range in enumerate(bounds):
            units.append(Unit(table, index, key_range if len(bounds) > 1 else None))
    return units, sums, counts


def check_source(
    source: SqliteSource,
    tables: list[Table],
    *,
    strip_nul: bool,
    workers: int,
    limit: int = 1000,
    tick: Callable[[int], Any] | None = None,
) -> tuple[dict[str, RangedSum], ScanResult]:
    """Scan every value and sum every row hash of the source, per table and key range."""
    units, sums, counts = plan(source, tables)
    expected = {(u.table.qualified, u.index) for u in units}
    result = ScanResult(rows=dict(counts))
    helpers = 0 if source.snapshot_only else min(workers - 1, len(units) - 1)
    if helpers <= 0:
        outcomes: Iterable[UnitResult] = (
            check_unit(source, u, strip_nul=strip_nul, limit=limit) for u in units
        )
    else:
        outcomes = _shared(source, units, helpers, strip_nul=strip_nul, limit=limit)
    _collect(outcomes, sums, result, expected, tick, limit)
    orphaned = orphans(source, tables)
    result.offenders.extend(orphaned)
    result.offenders_total += len(orphaned)
    return sums, result


def _shared(
    source: SqliteSource, units: list[Unit], helpers: int, *, strip_nul: bool, limit: int
) -> Iterable[UnitResult]:
    """Units done by the parent and `helpers` worker processes; results in completion order."""
    todo = deque(sorted(units, key=lambda u: u.bounds is None))  # ranges of big tables first
    command = [
        sys.executable,
        "-m",
        "tg_parser.migrate.worker",
        str(source.directory),
        ",".join(source.stores),
        json.dumps(source.files),
    ]
    procs = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE) for _ in range(helpers)]
    selector = selectors.DefaultSelector()
    busy: set[int] = set()
    try:
        for index, proc in enumerate(procs):
            selector.register(proc.stdout, selectors.EVENT_READ, index)  # type: ignore[arg-type]
            if todo:
                send(proc.stdin, (todo.popleft(), strip_nul, limit))  # type: ignore[arg-type]
                busy.add(index)
        while todo or busy:
            if todo:  # the parent works too, and looks for finished helpers between its own units
                yield check_unit(source, todo.popleft(), strip_nul=strip_nul, limit=limit)
            for key, _ in selector.select(timeout=0 if todo else None):
                index = key.data
                outcome = receive(procs[index].stdout)  # type: ignore[arg-type]
                if outcome is None:
                    raise MigrationError(
                        "a preflight worker process died", "see the messages above; run with --workers 1"
                    )
                busy.discard(index)
                if todo:
                    send(procs[index].stdin, (todo.popleft(), strip_nul, limit))  # type: ignore[arg-type]
                    busy.add(index)
                yield outcome
    finally:
        selector.close()
        for proc in procs:
            if proc.stdin:
                proc.stdin.close()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()


def _collect(
    outcomes: Any,
    sums: dict[str, RangedSum],
    result: ScanResult,
    expected: set[tuple[str, int]],
    tick: Callable[[int], Any] | None,
    limit: int,
) -> None:
    for outcome in outcomes:
        expected.discard((outcome.table, outcome.index))
        ranged = sums[outcome.table]
        part = ranged.parts[outcome.index]
        part.rows += outcome.rows
        part.value += outcome.value
        ranged.total.rows += outcome.rows
        ranged.total.value += outcome.value
        for column, count in outcome.repairs.items():
            cols = result.repairs.setdefault(outcome.table, {})
            cols[column] = cols.get(column, 0) + count
        room = max(0, limit - len(result.offenders))
        result.offenders.extend(outcome.offenders[:room])
        result.offenders_total += outcome.offences
        if tick is not None:
            tick(outcome.rows)
    if expected:  # a guard, not an expected path: every range must have been summed
        raise MigrationError(f"key ranges were never checked: {sorted(expected)[:3]}", "report this as a bug")
