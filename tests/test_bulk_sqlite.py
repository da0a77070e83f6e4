"""The migrator's SQLite side (db/bulk_sqlite.py through transfer/source.py): how it holds the store files
still, and that it never writes.

* with the write lock (the normal case) another process's write waits, and fails at its busy timeout;
* read-only (as the scan helpers open the files, and as a backup on read-only media must be read), one
  read snapshot is pinned instead: a commit made meanwhile is not seen, so every pass reads the same data;
* either way the connection is query-only, and a failing statement surfaces as the module's own
  exception (callers never import sqlite3).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.conftest import sqlite_settings
from tg_parser.db.bulk_sqlite import SqliteQueryFailed
from tg_parser.db.connect import open_database
from tg_parser.db.sqlite import STORE_FILES
from tg_parser.domain.models import Source
from tg_parser.stores import IngestionStore
from tg_parser.transfer.source import SqliteSource

COUNT = "SELECT count(*) FROM ingestion.sources"


def add_source(directory: Path, source_id: str, channel_id: int) -> None:
    db = open_database(sqlite_settings(directory))
    try:
        IngestionStore(db).add_source(Source(source_id=source_id, channel_id=channel_id, username=source_id))
    finally:
        db.close()


def write_directly(directory: Path, timeout: float = 5.0) -> None:
    """Another process's write (a plain sqlite3 connection, as any writer would use)."""
    conn = sqlite3.connect(directory / STORE_FILES["ingestion"], timeout=timeout)
    try:
        conn.execute("UPDATE sources SET title = 'changed'")
        conn.commit()
    finally:
        conn.close()


def test_a_read_only_source_pins_one_snapshot(sqlite_dir):
    add_source(sqlite_dir, "first", 1)
    # Ingestion attached second, and not read before the writes below: hold() itself must start the
    # snapshot in every file, not leave it to each file's first read.
    source = SqliteSource(sqlite_dir, ("raw", "ingestion"), readonly=True)
    try:
        assert source.snapshot_only
        assert source.hold() == "read snapshot (files are read-only)"
        add_source(sqlite_dir, "second", 2)  # WAL: a writer is not blocked by the snapshot ...
        write_directly(sqlite_dir)
        assert source.db.one(COUNT) == (1,)  # ... and its commits are not seen by it
        assert source.db.one("SELECT title FROM ingestion.sources") == (None,)
    finally:
        source.close()
    fresh = SqliteSource(sqlite_dir, ("ingestion",), readonly=True)
    try:
        assert fresh.db.one(COUNT) == (2,)
    finally:
        fresh.close()


def test_the_write_lock_holds_writers_off_until_the_source_closes(sqlite_dir):
    add_source(sqlite_dir, "first", 1)
    source = SqliteSource(sqlite_dir, ("ingestion",), busy_timeout_ms=100)
    try:
        assert not source.snapshot_only
        assert source.hold() == "write lock held"
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            write_directly(sqlite_dir, timeout=0.05)
    finally:
        source.close()
    write_directly(sqlite_dir)  # released on close
    conn = sqlite3.connect(sqlite_dir / STORE_FILES["ingestion"])
    try:
        assert conn.execute("SELECT title FROM sources").fetchall() == [("changed",)]
    finally:
        conn.close()


@pytest.mark.parametrize("readonly", [False, True], ids=["locked", "snapshot"])
def test_the_source_never_writes_and_failures_are_its_own_exception(sqlite_dir, readonly):
    add_source(sqlite_dir, "first", 1)
    source = SqliteSource(sqlite_dir, ("ingestion",), readonly=readonly)
    try:
        source.hold()
        with pytest.raises(SqliteQueryFailed, match=r"readonly|query_only|read-only"):
            source.db.all("DELETE FROM ingestion.sources")
        with pytest.raises(SqliteQueryFailed, match="no such table"):
            source.db.one("SELECT * FROM ingestion.no_such_table")
        assert source.db.one(COUNT) == (1,)  # the failed statements left the transaction usable
    finally:
        source.close()
    add_source(sqlite_dir, "second", 2)
    conn = sqlite3.connect(sqlite_dir / STORE_FILES["ingestion"])
    try:
        assert conn.execute("SELECT count(*) FROM sources").fetchone() == (2,)  # nothing was deleted
    finally:
        conn.close()
