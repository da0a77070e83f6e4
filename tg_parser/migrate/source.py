"""The SQLite side: the three store files, read under a write lock so they cannot change mid-copy.

The migrator opens its own connection (not the application's executor) because it needs what the
executor deliberately hides: raw bytes (`text_factory=bytes`, so invalid UTF-8 is seen rather than
raising), storage classes (`typeof()`), and a lock held for the whole run.

Why a lock: `BEGIN IMMEDIATE` takes SQLite's RESERVED lock on every attached file. Readers carry on (WAL),
but no other process can commit until the migrator ends, so every pass — scan, load, checksums, narrowing —
reads the same data, and no row can be written after the copy and silently left behind. A writer that
tries meanwhile waits for its busy timeout and fails with "database is locked"; the guide tells operators
to stop writers first. `PRAGMA query_only` then guarantees the migrator itself writes nothing. When the
files are read-only (a backup on read-only media) the lock cannot be taken; one read transaction is
opened instead, which in WAL mode pins one consistent snapshot of each file for the run.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tg_parser.migrate import catalog
from tg_parser.migrate.catalog import KeyRange
from tg_parser.migrate.errors import PreflightRefused, SourceBusy
from tg_parser.migrate.schema import Table


class SqliteSource:
    def __init__(
        self,
        directory: Path,
        stores: tuple[str, ...],
        busy_timeout_ms: int = 5_000,
        *,
        readonly: bool = False,
        files: dict[str, str] | None = None,
    ) -> None:
        if files is None:
            from tg_parser.db.sqlite import STORE_FILES

            files = dict(STORE_FILES)
        self.files = files
        self.directory = directory
        self.stores = stores
        self.snapshot_only = readonly
        missing = [files[s] for s in stores if not (directory / files[s]).is_file()]
        if missing:
            raise PreflightRefused(
                f"the SQLite source {directory} is missing {', '.join(missing)}",
                "point --from-sqlite (or DB_SQLITE_DIR) at the directory holding the store files",
            )
        self.conn = sqlite3.connect(
            "file::memory:", uri=True, isolation_level=None, timeout=busy_timeout_ms / 1000
        )
        self.conn.text_factory = bytes
        self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        for store in stores:
            uri = (directory / files[store]).resolve().as_uri() + ("?mode=ro" if readonly else "?mode=rw")
            try:
                self.conn.execute(f"ATTACH DATABASE ? AS {catalog.q(store)}", (uri,))
            except sqlite3.OperationalError:
                # Not writable: attach read-only and settle for a snapshot (see the module docstring).
                self.conn.execute(f"ATTACH DATABASE ? AS {catalog.q(store)}", (uri[: -len("rw")] + "ro",))
                self.snapshot_only = True

    def describe(self) -> str:
        return f"SQLite in {self.directory}"

    # --- consistency -----------------------------------------------------------------------------

    def hold(self) -> str:
        """Lock (or, for read-only files, pin a snapshot of) every store file for the rest of the run;
        returns how, for the report."""
        if not self.snapshot_only:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    raise SourceBusy(
                        f"the SQLite stores in {self.directory} are being written by another process",
                        "stop ingestion, processing, cron jobs and the API that use them, then run again",
                    ) from None
                if "readonly" not in str(exc):
                    raise
                self.snapshot_only = True
        if self.snapshot_only:
            self.conn.execute("BEGIN")
            for store in self.stores:  # a read in each file starts its snapshot now
                self.conn.execute(f"SELECT count(*) FROM {catalog.q(store)}.sqlite_master").fetchone()
        self.conn.execute("PRAGMA query_only = ON")
        return "read snapshot (files are read-only)" if self.snapshot_only else "write lock held"

    def close(self) -> None:
        try:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        finally:
            self.conn.close()

    # --- catalog ---------------------------------------------------------------------------------

    def migration_ids(self, store: str) -> list[str] | None:
        return catalog.sqlite_migration_ids(self.conn, store)

    def tables(self, store: str) -> list[str]:
        return catalog.sqlite_tables(self.conn, store)

    def columns(self, store: str, table: str) -> list[tuple[str, str, bool, int]]:
        return catalog.sqlite_columns(self.conn, store, table)

    def parents(self, store: str, table: str) -> list[str]:
        return catalog.sqlite_parents(self.conn, store, table)

    def foreign_key_violations(self, store: str) -> list[tuple[str, int, str]]:
        return catalog.sqlite_foreign_key_violations(self.conn, store)

    def count(self, table: Table, bounds: KeyRange | None = None) -> int:
        statement, params = catalog.sqlite_range_count_sql(table, bounds)
        return int(self.conn.execute(statement, params).fetchone()[0])

    # --- rows ------------------------------------------------------------------------------------

    def fetch(self, statement: str, params: list[Any], batch: int) -> Iterator[tuple[Any, ...]]:
        cursor = self.conn.execute(statement, params)
        try:
            while chunk := cursor.fetchmany(batch):
                yield from chunk
        finally:
            cursor.close()

    def check_rows(
        self, table: Table, bounds: KeyRange | None, batch: int = 2000
    ) -> Iterator[tuple[Any, ...]]:
        statement, params = catalog.sqlite_check_sql(table, bounds)
        return self.fetch(statement, params, batch)

    def copy_rows(self, table: Table, *, nul_flag: bool, batch: int = 2000) -> Iterator[tuple[Any, ...]]:
        return self.fetch(catalog.sqlite_copy_sql(table, nul_flag=nul_flag), [], batch)

    def hash_rows(
        self, table: Table, bounds: KeyRange | None, batch: int = 2000
    ) -> Iterator[tuple[Any, ...]]:
        statement, params = catalog.sqlite_hash_sql(table, bounds)
        return self.fetch(statement, params, batch)

    def typed_row(self, table: Table, key: tuple[Any, ...]) -> tuple[Any, ...]:
        """(typeof, value) pairs flattened, for diagnosing one row."""
        row = self.conn.execute(catalog.sqlite_row_sql(table), _key_params(key)).fetchone()
        return tuple(row) if row else ()

    def raw_row(self, table: Table, key: tuple[Any, ...]) -> tuple[Any, ...]:
        row = self.conn.execute(catalog.sqlite_raw_row_sql(table), _key_params(key)).fetchone()
        return tuple(row) if row else ()

    def key_of_rowid(self, table: Table, rowid: int | None) -> tuple[Any, ...] | None:
        """The primary key of a row named by rowid (None for WITHOUT ROWID tables)."""
        if rowid is None:
            return None
        try:
            row = self.conn.execute(catalog.sqlite_key_by_rowid_sql(table), (rowid,)).fetchone()
        except sqlite3.OperationalError:  # WITHOUT ROWID
            return None
        return tuple(row) if row else None

    def raw_boundaries(
        self, table: Table, step: int, bounds: KeyRange | None = None
    ) -> list[tuple[Any, ...]]:
        """Every `step`-th key in key order, as read (bytes for text), to compare with streamed keys."""
        statement, params = catalog.sqlite_boundaries_sql(table, bounds)
        return [tuple(row) for row in self.conn.execute(statement, [*params, step]).fetchall()]

    def boundaries(self, table: Table, bounds: KeyRange | None, step: int) -> list[tuple[Any, ...]]:
        return [normalise_key(table, row) for row in self.raw_boundaries(table, step, bounds)]


def _key_params(key: tuple[Any, ...]) -> list[Any]:
    return [k.encode() if isinstance(k, str) else k for k in key]


def normalise_key(table: Table, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Key values as str/int, comparable with what PostgreSQL returns."""
    return tuple(v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in row[: len(table.key)])
