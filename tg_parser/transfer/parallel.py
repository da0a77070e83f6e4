"""The scan of the source (hostile values + source checksums), cut into key ranges and spread over
helper processes.

Rendering JSON the way jsonb prints it is the costly part of a checksum (pure CPU, per document), so
the scan runs in `workers` helper processes (`worker.py`), each with its own read-only SQLite
connection. They all read the same data: the parent holds the write lock for the whole run (see
`source.py`), so nobody can commit in between. Each table is cut into RANGES key ranges (every n-th key,
read from the primary-key index); the per-range sums are kept, and later let a mismatch be narrowed
without hashing the source again.

`Scan` runs asynchronously: during a migration the parent streams the COPY while the helpers scan, and
looks at their results between COPY blocks (`poll()`), so the first offender stops the load early.
When the parent has nothing else to do (`finish(parent_works=True)`, e.g. `db checksum`), it scans
ranges itself too.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from typing import IO, Any

from tg_parser.transfer.checksum import RangedSum
from tg_parser.transfer.errors import MigrationError
from tg_parser.transfer.scan import ScanResult, Unit, UnitResult, check_unit, orphans
from tg_parser.transfer.schema import Table
from tg_parser.transfer.source import SqliteSource
from tg_parser.transfer.worker import receive, send

RANGES = 64
# Requests queued per helper, so a helper never waits for the parent to read its last answer (the
# parent only looks between COPY blocks).
DEPTH = 2


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


class Scan:
    """The scan of `tables` by `helpers` processes (0: only by the parent, in `finish`)."""

    def __init__(
        self,
        source: SqliteSource,
        tables: list[Table],
        *,
        strip_nul: bool,
        helpers: int,
        limit: int = 1000,
        check_utf8: bool = True,
    ) -> None:
        self.source = source
        self.check_utf8 = check_utf8
        self.tables = tables
        self.strip_nul = strip_nul
        self.limit = limit
        units, self.sums, counts = plan(source, tables)
        self.result = ScanResult(rows=dict(counts))
        self.expected = {(u.table.qualified, u.index) for u in units}
        self.todo = deque(sorted(units, key=lambda u: u.bounds is None))  # ranges of big tables first
        self.rows_done = 0
        self.procs: list[subprocess.Popen[bytes]] = []
        self.pending: dict[int, int] = {}  # helper index → requests not yet answered
        self.selector = selectors.DefaultSelector()
        helpers = 0 if source.snapshot_only else min(helpers, len(units))
        if helpers:
            command = [
                sys.executable,
                "-m",
                "tg_parser.transfer.worker",
                str(source.directory),
                ",".join(source.stores),
                json.dumps(source.files),
            ]
            for index in range(helpers):
                proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
                self.procs.append(proc)
                self.pending[index] = 0
                self.selector.register(proc.stdout, selectors.EVENT_READ, index)  # type: ignore[arg-type]
                for _ in range(DEPTH):
                    self._dispatch(index)

    @property
    def rows(self) -> int:
        return sum(self.result.rows.values())

    @property
    def offences(self) -> int:
        return self.result.offenders_total

    def _dispatch(self, index: int) -> None:
        if self.todo:
            stdin: IO[bytes] = self.procs[index].stdin  # type: ignore[assignment]
            send(stdin, (self.todo.popleft(), self.strip_nul, self.limit, self.check_utf8))
            self.pending[index] += 1

    def _take(self, outcome: UnitResult) -> None:
        self.expected.discard((outcome.table, outcome.index))
        ranged = self.sums[outcome.table]
        part = ranged.parts[outcome.index]
        part.rows += outcome.rows
        part.value += outcome.value
        ranged.total.rows += outcome.rows
        ranged.total.value += outcome.value
        result = self.result
        for column, count in outcome.repairs.items():
            cols = result.repairs.setdefault(outcome.table, {})
            cols[column] = cols.get(column, 0) + count
        room = max(0, self.limit - len(result.offenders))
        result.offenders.extend(outcome.offenders[:room])
        result.offenders_total += outcome.offences
        self.rows_done += outcome.rows

    def _collect(self, timeout: float | None) -> int:
        """Take the answers that are ready (waiting up to `timeout`); returns rows newly scanned."""
        before = self.rows_done
        for key, _ in self.selector.select(timeout=timeout):
            index = key.data
            outcome = receive(self.procs[index].stdout)  # type: ignore[arg-type]
            if outcome is None:
                raise MigrationError(
                    "a scan helper process died", "see the messages above; run with --workers 1"
                )
            self.pending[index] -= 1
            self._dispatch(index)
            self._take(outcome)
        return self.rows_done - before

    def poll(self) -> int:
        """Non-blocking: take finished ranges, hand out new ones; returns rows newly scanned."""
        return self._collect(0) if self.procs else 0

    def finish(self, *, parent_works: bool, tick: Callable[[int], Any] | None = None) -> None:
        """Block until every range is scanned; `parent_works` lets this process scan ranges too."""
        busy = any(self.pending.values())
        while self.todo or busy:
            if self.todo and (parent_works or not self.procs):
                outcome = check_unit(
                    self.source,
                    self.todo.popleft(),
                    strip_nul=self.strip_nul,
                    limit=self.limit,
                    check_utf8=self.check_utf8,
                )
                self._take(outcome)
                done = outcome.rows + (self._collect(0) if self.procs else 0)
            else:
                done = self._collect(None)
            if tick is not None and done:
                tick(done)
            busy = any(self.pending.values())
        if self.expected:  # a guard, not an expected path: every range must have been summed
            raise MigrationError(
                f"key ranges were never checked: {sorted(self.expected)[:3]}", "report this as a bug"
            )
        orphaned = orphans(self.source, self.tables)
        self.result.offenders.extend(orphaned)
        self.result.offenders_total += len(orphaned)

    def close(self) -> None:
        self.selector.close()
        for proc in self.procs:
            if proc.stdin:
                proc.stdin.close()
        for proc in self.procs:
            if any(self.pending.values()):
                proc.kill()  # stopped early (an error): do not wait for ranges nobody will read
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()
        self.procs = []


def check_source(
    source: SqliteSource,
    tables: list[Table],
    *,
    strip_nul: bool,
    workers: int,
    limit: int = 1000,
    tick: Callable[[int], Any] | None = None,
) -> tuple[dict[str, RangedSum], ScanResult]:
    """Scan every value and sum every row hash of the source, in this process and `workers - 1`
    helpers; per table and key range."""
    scan = Scan(source, tables, strip_nul=strip_nul, helpers=workers - 1, limit=limit)
    try:
        scan.finish(parent_works=True, tick=tick)
    finally:
        scan.close()
    return scan.sums, scan.result
