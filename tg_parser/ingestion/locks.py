"""One ingestion per source at a time, across processes and hosts (cron safety).

* PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`, named query `ingest_lock_try`) on one
  dedicated pooled connection held for the whole run. Every host sharing the database sees it; if the
  process dies, PostgreSQL drops the connection and the lock with it.
* SQLite: an exclusive `flock` on `<DB_SQLITE_DIR>/locks/ingest-<source>.lock`. The kernel releases it
  when the process exits, however it exits. It covers every process on the host that uses the same
  data directory (SQLite itself should not be shared across hosts over a network file system).

Both are try-locks: a run that finds the lock held does not wait, it reports `SourceLocked` (exit code 4).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tg_parser.db.base import Database
from tg_parser.errors import ConfigError
from tg_parser.ingestion.errors import SourceLocked

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def lock_key(source_id: str) -> int:
    """A stable signed 64-bit key for the source (PostgreSQL advisory locks take a bigint)."""
    digest = hashlib.blake2b(f"tg-parser:ingest:{source_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def lock_file(directory: Path, source_id: str) -> Path:
    """A file name that is safe on every file system yet unique per source id."""
    readable = _UNSAFE.sub("_", source_id)[:60] or "source"
    suffix = hashlib.blake2b(source_id.encode(), digest_size=4).hexdigest()
    return directory / "locks" / f"ingest-{readable}-{suffix}.lock"


def _held_message(source_id: str, holder: str | None) -> SourceLocked:
    who = f" ({holder})" if holder else ""
    return SourceLocked(
        f"source {source_id!r} is being ingested by another run{who}",
        "this run skipped it; the next scheduled run will pick it up",
    )


@contextmanager
def source_lock(db: Database, source_id: str, sqlite_dir: Path | None = None) -> Iterator[None]:
    """Hold the source's ingestion lock for the block, or raise SourceLocked at once."""
    if db.dialect == "postgres":
        with _pg_lock(db, source_id):
            yield
    else:
        directory = sqlite_dir if sqlite_dir is not None else Path(getattr(db, "directory", "."))
        with _file_lock(lock_file(directory, source_id), source_id):
            yield


@contextmanager
def _pg_lock(db: Database, source_id: str) -> Iterator[None]:
    key = lock_key(source_id)
    pool = getattr(db, "pool", None)
    if pool is not None and pool.max_size < 2:
        raise ConfigError(
            "DB_POOL_MAX_SIZE is 1, but ingestion needs 2 connections (one holds the source's lock)",
            "set DB_POOL_MAX_SIZE to 2 or more",
        )
    pinned = db.pinned_session  # type: ignore[attr-defined]  # PostgresDatabase only
    with pinned() as session:
        row = session.fetch_one(db.query("ingest_lock_try"), {"key": key})
        if not row or not row["acquired"]:
            holder = db.fetch_one("ingest_lock_holder", {"key": key})
            text = None
            if holder and holder.get("pid"):
                where = f" from {holder['client_addr']}" if holder.get("client_addr") else ""
                text = f"PostgreSQL backend pid {holder['pid']}{where}, {holder.get('application_name') or 'unknown app'}"
            raise _held_message(source_id, text)
        try:
            yield
        finally:
            # If the connection is gone, so is the lock: nothing is left to release.
            with suppress(Exception):
                session.fetch_one(db.query("ingest_lock_release"), {"key": key})


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
def _file_lock(path: Path, source_id: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    # "a+" never truncates: a holder's diagnostics stay readable until we own the lock.
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - the handle must outlive this frame
    try:
        if not _lock_exclusive(handle):
            raise _held_message(source_id, _describe_holder(path))
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "since": datetime.now(UTC).isoformat(),
                    "source_id": source_id,
                }
            )
        )
        handle.flush()
        yield
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
