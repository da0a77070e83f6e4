"""The scan of the source (hostile values + source checksums), cut into key ranges and spread over
helper processes.

Rendering JSON the way jsonb prints it is the costly part of a checksum (pure CPU, per document), so
the scan runs in helper processes: a `concurrent.futures.ProcessPoolExecutor` whose processes come from
multiprocessing's forkserver (a fresh interpreter, so no helper inherits the parent's PostgreSQL
socket, as `fork` would make it; forked again per helper with the scan's modules already imported, so
a helper starts in milliseconds). Each helper opens its own read-only SQLite connection
(`worker.start`). They all read the same data: the parent holds the write lock for the whole run (see
`source.py`), so nobody can commit in between. Each table is cut into RANGES key ranges (every n-th key,
read from the primary-key index); the per-range sums are kept, and later let a mismatch be narrowed
without hashing the source again.

`Scan` runs asynchronously: during a migration the parent streams the COPY while the helpers scan, and
looks at their results between COPY blocks (`poll()`), so the first offender stops the load early.
When the parent has nothing else to do (`finish(parent_works=True)`, e.g. `db checksum`), it scans
ranges itself too.

A helper that dies fails the scan at once (the pool is broken); one that hangs fails it when no key
range has finished for longer than the largest range may take (`deadline`). Either way the run stops
with one error and the helpers are killed, never waited for. As with any multiprocessing pool, a
script that calls the migrator guards its own code with `if __name__ == "__main__":`.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from tg_parser.transfer import worker
from tg_parser.transfer.checksum import RangedSum
from tg_parser.transfer.errors import HelperFailed, MigrationError
from tg_parser.transfer.scan import ScanResult, Unit, UnitResult, check_unit, orphans
from tg_parser.transfer.schema import Table
from tg_parser.transfer.source import SqliteSource

RANGES = 64
# Key ranges handed to each helper at a time, so a helper never waits for the parent (which only looks
# between COPY blocks) to get its next range.
DEPTH = 2
# A helper that finishes no key range within GRACE + SECONDS_PER_ROW × (rows of the largest range) is
# taken as hung. A range normally takes ~10 µs a row; the grace covers the helpers' start.
GRACE = 60.0
SECONDS_PER_ROW = 0.001


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


def _largest_range(counts: dict[str, int]) -> int:
    """An upper bound of the rows in one key range (a range holds one step of rows, the last < 2)."""
    return max((2 * (rows // RANGES) if rows >= 2 * RANGES else rows for rows in counts.values()), default=0)


def _pool(helpers: int, source: SqliteSource) -> ProcessPoolExecutor:
    context = multiprocessing.get_context("forkserver")
    # The forkserver imports the scan's modules once, before it forks helpers ('__main__' is the
    # default preload; it must stay, or each helper would import the main script itself). Only read
    # when the forkserver starts, i.e. on the first pool of this process.
    context.set_forkserver_preload(["__main__", worker.__name__])
    return ProcessPoolExecutor(
        max_workers=helpers,
        mp_context=context,
        initializer=worker.start,
        initargs=(source.directory, tuple(source.stores), dict(source.files), os.getpid()),
    )


def _kill(pool: ProcessPoolExecutor) -> None:
    """Stop the helpers now, running ranges and all, and release the pool without waiting for them."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public way before 3.14
    for process in processes:
        if process.is_alive():
            process.kill()
    pool.shutdown(wait=True, cancel_futures=True)  # returns at once: the pool sees its helpers gone
    for process in processes:
        process.join(timeout=10)


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
        self.in_flight: set[Future[UnitResult]] = set()
        self.deadline = GRACE + SECONDS_PER_ROW * _largest_range(counts)
        self.progress_at = time.monotonic()  # when a helper last finished a range (or got work)
        helpers = 0 if source.snapshot_only else min(helpers, len(units))
        self.helpers = helpers
        self.executor: ProcessPoolExecutor | None = _pool(helpers, source) if helpers else None
        self._top_up()

    @property
    def rows(self) -> int:
        return sum(self.result.rows.values())

    @property
    def offences(self) -> int:
        return self.result.offenders_total

    def _top_up(self) -> None:
        """Hand out ranges until every helper has DEPTH of them."""
        if self.executor is None:
            return
        if not self.in_flight:
            self.progress_at = time.monotonic()  # the helpers were idle, waiting for work
        while self.todo and len(self.in_flight) < DEPTH * self.helpers:
            unit = self.todo.popleft()
            future = self.executor.submit(worker.scan, unit, self.strip_nul, self.limit, self.check_utf8)
            self.in_flight.add(future)

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
        """Take the helpers' finished ranges (waiting up to `timeout`, None: until one finishes or the
        deadline passes) and hand out new ones; returns rows newly scanned."""
        if not self.in_flight:
            return 0
        if timeout is None:
            timeout = max(0.0, self.progress_at + self.deadline - time.monotonic())
        done, self.in_flight = wait(self.in_flight, timeout=timeout, return_when=FIRST_COMPLETED)
        before = self.rows_done
        for future in done:
            try:
                outcome = future.result()
            except BrokenProcessPool:
                raise HelperFailed(
                    "a scan helper process died",
                    "it was killed or crashed (out of memory?); run again, with fewer --workers if memory is short",
                ) from None
            self._take(outcome)
        if done:
            self.progress_at = time.monotonic()
            self._top_up()
        elif time.monotonic() - self.progress_at >= self.deadline:
            raise HelperFailed(
                f"a scan helper process stopped answering (no key range finished in {self.deadline:.0f} s)",
                "run again; if it happens again, report it as a bug",
            )
        return self.rows_done - before

    def poll(self) -> int:
        """Non-blocking: take finished ranges, hand out new ones; returns rows newly scanned."""
        return self._collect(0)

    def finish(self, *, parent_works: bool, tick: Callable[[int], Any] | None = None) -> None:
        """Block until every range is scanned; `parent_works` lets this process scan ranges too."""
        while self.todo or self.in_flight:
            if self.todo and (parent_works or self.executor is None):
                outcome = check_unit(
                    self.source,
                    self.todo.popleft(),
                    strip_nul=self.strip_nul,
                    limit=self.limit,
                    check_utf8=self.check_utf8,
                )
                self._take(outcome)
                done = outcome.rows + self._collect(0)
            else:
                done = self._collect(None)
            if tick is not None and done:
                tick(done)
        if self.expected:  # a guard, not an expected path: every range must have been summed
            raise MigrationError(
                f"key ranges were never checked: {sorted(self.expected)[:3]}", "report this as a bug"
            )
        orphaned = orphans(self.source, self.tables)
        self.result.offenders.extend(orphaned)
        self.result.offenders_total += len(orphaned)

    def close(self) -> None:
        """Release the helpers: idle ones exit, busy ones (the scan stopped early) are killed."""
        pool, self.executor = self.executor, None
        if pool is None:
            return
        if self.in_flight or self.todo:
            _kill(pool)
        else:
            pool.shutdown(wait=True)
        self.in_flight = set()


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
