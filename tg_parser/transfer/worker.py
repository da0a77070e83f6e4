"""What a scan helper process runs: `start` once (the pool's initializer), then `scan` per key range.

The helpers are the processes of a `concurrent.futures.ProcessPoolExecutor` (see `parallel.py`), started
by multiprocessing's forkserver: a fresh interpreter that never held the parent's PostgreSQL socket,
forked again for each helper, with this module (the SQLite half of the migrator only) imported once,
before the forks. Each helper opens its own read-only connection to the store files; the parent's
write lock keeps them unchanged while it reads.
"""

from __future__ import annotations

from pathlib import Path

from tg_parser.transfer.scan import Unit, UnitResult, check_unit
from tg_parser.transfer.source import SqliteSource

_source: SqliteSource | None = None


def start(directory: Path, stores: tuple[str, ...], files: dict[str, str]) -> None:
    """Open this helper's read-only connection (closed when the helper exits)."""
    global _source
    _source = SqliteSource(directory, stores, readonly=True, files=files)


def scan(unit: Unit, strip_nul: bool, limit: int, check_utf8: bool) -> UnitResult:
    """Scan one key range (see `scan.check_unit`)."""
    if _source is None:  # a guard: the pool always runs `start` first
        raise RuntimeError("the scan helper was not started")
    return check_unit(_source, unit, strip_nul=strip_nul, limit=limit, check_utf8=check_utf8)
