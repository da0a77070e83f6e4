"""Raw SQLite access for bulk tools (the SQLite → PostgreSQL migrator), the only place they touch sqlite3.

The application's executor hides what a migrator must see, so bulk tools get their own connection:

* the store files are ATTACHed to one in-memory connection under their store names, so one transaction
  (and one lock) covers all of them;
* text comes back as the stored bytes (`text_factory=bytes`): invalid UTF-8 is seen, not raised;
* a write lock can be held for a whole run (`BEGIN IMMEDIATE`), or, for read-only files, one read
  snapshot is pinned instead.

Driver exceptions are translated into the exceptions below, so callers never import sqlite3.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any


class SqliteBusy(Exception):
    """Another connection holds the write lock (or keeps the files busy) beyond the busy timeout."""


class SqliteQueryFailed(Exception):
    """A statement failed (missing table, WITHOUT ROWID table asked for rowid, …)."""


def quote(name: str) -> str:
    """A SQLite identifier."""
    return '"' + name.replace('"', '""') + '"'


class BulkSqlite:
    """One connection with `files` (store name → path) attached; read-write unless that is impossible."""

    def __init__(
        self, files: Mapping[str, Path], busy_timeout_ms: int = 5_000, *, readonly: bool = False
    ) -> None:
        self.readonly = readonly
        self.conn = sqlite3.connect(
            "file::memory:", uri=True, isolation_level=None, timeout=busy_timeout_ms / 1000
        )
        self.conn.text_factory = bytes
        self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        for store, path in files.items():
            uri = path.resolve().as_uri()
            try:
                self.conn.execute(
                    f"ATTACH DATABASE ? AS {quote(store)}", (uri + ("?mode=ro" if readonly else "?mode=rw"),)
                )
            except sqlite3.OperationalError:
                if readonly:
                    raise
                # Not writable (a backup on read-only media): attach read-only; hold() pins a snapshot.
                self.conn.execute(f"ATTACH DATABASE ? AS {quote(store)}", (uri + "?mode=ro",))
                self.readonly = True

    # --- transactions ----------------------------------------------------------------------------

    def lock(self) -> bool:
        """Take the write lock on every attached file; False when the files cannot be written."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise SqliteBusy(text) from None
            if "readonly" not in text:
                raise SqliteQueryFailed(text) from None
            self.readonly = True
            return False
        return True

    def snapshot(self, stores: Sequence[str]) -> None:
        """Open a read transaction and start its snapshot in every file (a read in each file does)."""
        self.conn.execute("BEGIN")
        for store in stores:
            self.conn.execute(f"SELECT count(*) FROM {quote(store)}.sqlite_master").fetchone()

    def query_only(self) -> None:
        self.conn.execute("PRAGMA query_only = ON")

    def close(self) -> None:
        try:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        finally:
            self.conn.close()

    # --- statements ------------------------------------------------------------------------------

    def all(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.conn.execute(statement, params).fetchall()
        except sqlite3.OperationalError as exc:
            raise SqliteQueryFailed(str(exc)) from None

    def one(self, statement: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        try:
            row = self.conn.execute(statement, params).fetchone()
        except sqlite3.OperationalError as exc:
            raise SqliteQueryFailed(str(exc)) from None
        return tuple(row) if row is not None else None

    def stream(
        self, statement: str, params: Sequence[Any] = (), batch: int = 2000
    ) -> Iterator[tuple[Any, ...]]:
        """Rows in batches of `batch` (`fetchmany`), so memory stays flat whatever the table size."""
        cursor = self.conn.execute(statement, params)
        try:
            while chunk := cursor.fetchmany(batch):
                yield from chunk
        finally:
            cursor.close()

    def batches(
        self, statement: str, params: Sequence[Any] = (), batch: int = 2000
    ) -> Iterator[list[tuple[Any, ...]]]:
        """The same rows as `stream`, a list per fetch (saves a generator step per row in hot loops)."""
        cursor = self.conn.execute(statement, params)
        try:
            while chunk := cursor.fetchmany(batch):
                yield chunk
        finally:
            cursor.close()
