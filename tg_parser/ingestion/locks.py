"""One ingestion per source at a time, across processes and hosts (cron safety).

The lock itself is the database's named try-lock (`Database.hold_lock`, see `tg_parser/db/locks.py`): a
PostgreSQL advisory lock, or a file lock next to the SQLite stores. A run that finds it held does not
wait, it reports `SourceLocked` (exit code 4). The block gets the held lock: the runner calls its `check()`
inside each batch's write transaction, so a run whose lock was lost (`LockLost`: the PostgreSQL
connection holding it broke) stops before committing anything more.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tg_parser.db.base import Database
from tg_parser.db.locks import HeldLock, LockBusy
from tg_parser.ingestion.errors import SourceLocked


def lock_name(source_id: str) -> str:
    return f"ingest:{source_id}"


@contextmanager
def source_lock(db: Database, source_id: str) -> Iterator[HeldLock]:
    """Hold the source's ingestion lock for the block, or raise SourceLocked at once."""
    name = lock_name(source_id)
    try:
        with db.hold_lock(name) as held:
            yield held
    except LockBusy as busy:
        if busy.name != name:  # another lock, taken inside the block
            raise
        who = f" ({busy.holder})" if busy.holder else ""
        raise SourceLocked(
            f"source {source_id!r} is being ingested by another run{who}",
            "this run skipped it; the next scheduled run will pick it up",
        ) from None
