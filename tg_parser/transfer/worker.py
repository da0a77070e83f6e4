"""What a scan helper process runs: `start` once (the pool's initializer), then `scan` per key range.

The helpers are the processes of a `concurrent.futures.ProcessPoolExecutor` (see `parallel.py`), started
by multiprocessing's forkserver: a fresh interpreter that never held the parent's PostgreSQL socket,
forked again for each helper, with this module (the SQLite half of the migrator only) imported once,
before the forks. Each helper opens its own read-only connection to the store files; the parent's
write lock keeps them unchanged while it reads.

A helper ends itself when the migrator that started it is gone: a `kill -9` of the migrator tells the
pool nothing, and its helpers would otherwise wait for work forever, holding the store files open (and
the migrator's stdout and stderr, so whatever reads them never sees them end).
"""

from __future__ import annotations

import os
import select
import threading
from pathlib import Path

from tg_parser.db.locks import pid_alive
from tg_parser.transfer.scan import Unit, UnitResult, check_unit
from tg_parser.transfer.source import SqliteSource

_source: SqliteSource | None = None


def start(directory: Path, stores: tuple[str, ...], files: dict[str, str], parent_pid: int) -> None:
    """Open this helper's read-only connection (closed when the helper exits), and end this helper when
    `parent_pid` (the migrator) ends."""
    global _source
    _source = SqliteSource(directory, stores, readonly=True, files=files)
    threading.Thread(target=_end_with, args=(parent_pid,), name="parent-watch", daemon=True).start()


def _end_with(parent_pid: int) -> None:
    """Wait (without polling, on a pidfd) until `parent_pid` ends, then end this process at once."""
    try:
        fd = os.pidfd_open(parent_pid)
    except ProcessLookupError:
        os._exit(1)  # already gone
    except (AttributeError, OSError):  # no pidfd (not Linux, old kernel): look once a second
        while pid_alive(parent_pid):
            threading.Event().wait(1.0)
        os._exit(1)
    select.select([fd], [], [])
    os._exit(1)


def scan(unit: Unit, strip_nul: bool, limit: int, check_utf8: bool) -> UnitResult:
    """Scan one key range (see `scan.check_unit`)."""
    if _source is None:  # a guard: the pool always runs `start` first
        raise RuntimeError("the scan helper was not started")
    return check_unit(_source, unit, strip_nul=strip_nul, limit=limit, check_utf8=check_utf8)
