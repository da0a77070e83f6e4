"""Named try-locks held for a block, across processes (and, on PostgreSQL, across hosts).

`Database.hold_lock(name)` takes the lock or raises `LockBusy` at once (it never waits):

* PostgreSQL: a session-level advisory lock (named query `session_lock_try`) on one pooled connection
  held for the whole block. Every host sharing the database sees it; if the process dies, PostgreSQL
  drops the connection and the lock with it.
* SQLite: an exclusive `flock` on `<DB_SQLITE_DIR>/locks/<name>-<hash>.lock`. The kernel releases it when
  the process exits, however it exits. It covers every process on the host that uses the same data
  directory (SQLite itself should not be shared across hosts over a network file system).

The block receives a `HeldLock`. A PostgreSQL lock can be lost while its block runs: the connection holding
an advisory lock breaks (a server restart, `pg_terminate_backend`), or, in transaction pool mode, the lock
row expires and another run takes it over. `HeldLock.check()` raises `LockLost` then; work guarded by the
lock calls it inside each write transaction, just before the commit, so a run that lost its lock stops
before writing anything more. A SQLite file lock cannot be lost while the process lives: `check()` does
nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tg_parser.db.codec import dump_json
from tg_parser.errors import TgParserError

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def pid_alive(pid: int) -> bool:
    """Is a process with this id running on this host (one of another user's counts)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LockBusy(Exception):
    """Another process holds the named lock; `holder` describes it when that is known."""

    def __init__(self, name: str, holder: str | None) -> None:
        super().__init__(f"lock {name!r} is held" + (f" by {holder}" if holder else ""))
        self.name = name
        self.holder = holder


class LockLost(TgParserError):
    """A lock this run held is no longer held: the work it guarded stopped before its next commit."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(
            f"lost the lock {name!r} ({why}), so this run stopped: another run may hold it now",
            "run it again; nothing after the last committed batch was written",
        )
        self.name = name
        self.why = why


# Why a lock is lost, as `LockLost` tells it.
CONNECTION_BROKE = "the database connection holding it broke"
ROW_TAKEN_OVER = "its lock row expired and was taken over"
ROW_EXPIRED = "its lock row was not renewed in time and expired"


class HeldLock:
    """A lock held for a block. `check()` raises `LockLost` when it is no longer held; `probe` answers
    why it was lost, or None while it is held (no probe: a lock that cannot be lost)."""

    def __init__(self, name: str, probe: Callable[[], str | None] | None = None) -> None:
        self.name = name
        self._probe = probe

    def check(self) -> None:
        why = self._probe() if self._probe is not None else None
        if why is not None:
            raise LockLost(self.name, why)


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for a lock name (PostgreSQL advisory locks take a bigint)."""
    digest = hashlib.blake2b(f"tg-parser:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def lock_file(directory: Path, name: str) -> Path:
    """A file name that is safe on every file system yet unique per lock name."""
    readable = _UNSAFE.sub("_", name)[:60] or "lock"
    suffix = hashlib.blake2b(name.encode(), digest_size=4).hexdigest()
    return directory / "locks" / f"{readable}-{suffix}.lock"


def _lock_exclusive(handle: Any) -> bool:
    """Try to take an exclusive lock on an open file; False when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        except OSError:
            return False
        return True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextmanager
def file_lock(path: Path, name: str) -> Iterator[HeldLock]:
    """Hold an exclusive flock on `path` for the block, or raise LockBusy naming the holder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # "a+" never truncates: a holder's diagnostics stay readable until we own the lock.
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - the handle must outlive this frame
    try:
        if not _lock_exclusive(handle):
            raise LockBusy(name, _describe_holder(path))
        handle.seek(0)
        handle.truncate()
        handle.write(
            dump_json(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "since": datetime.now(UTC).isoformat(),
                    "name": name,
                }
            )
        )
        handle.flush()
        yield HeldLock(name)  # the kernel keeps the flock while the descriptor is open: it cannot be lost
    finally:
        handle.close()  # closing the descriptor releases the flock


def _describe_holder(path: Path) -> str | None:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return None
    if not info.get("pid"):
        return None
    return f"pid {info['pid']} on {info.get('host', '?')} since {info.get('since', '?')}"
