"""The SQLite side: the three store files, read under a write lock so they cannot change mid-copy.

The connection is `tg_parser.db.bulk_sqlite.BulkSqlite` (raw bytes, `typeof()`, a lock held for the run;
see there). This class adds what the migrator asks of it, in terms of tables and key ranges.

Why a lock: `BEGIN IMMEDIATE` takes SQLite's RESERVED lock on every attached file. Readers carry on (WAL),
but no other process can commit until the migrator ends, so every pass — scan, load, checksums, narrowing —
reads the same data, and no row can be written after the copy and silently left behind. A writer that
tries meanwhile waits for its busy timeout and fails with "database is locked"; the guide tells operators
to stop writers first. `PRAGMA query_only` then guarantees the migrator itself writes nothing. When the
files are read-only (a backup on read-only media) the lock cannot be taken; one read transaction is
opened instead, which in WAL mode pins one consistent snapshot of each file for the run. The scan's
helper processes (`worker.py`) open the files read-only: the parent's lock keeps them unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tg_parser.db.bulk_sqlite import BulkSqlite, SqliteBusy, SqliteQueryFailed
from tg_parser.transfer import introspect
from tg_parser.transfer.errors import PreflightRefused, SourceBusy
from tg_parser.transfer.introspect import KeyRange
from tg_parser.transfer.schema import Table


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


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
        missing = [files[s] for s in stores if not (directory / files[s]).is_file()]
        if missing:
            raise PreflightRefused(
                f"the SQLite source {directory} is missing {', '.join(missing)}",
                "point --from-sqlite (or DB_SQLITE_DIR) at the directory holding the store files",
            )
        self.db = BulkSqlite({s: directory / files[s] for s in stores}, busy_timeout_ms, readonly=readonly)

    @property
    def snapshot_only(self) -> bool:
        return self.db.readonly

    def describe(self) -> str:
        return f"SQLite in {self.directory}"

    # --- consistency -----------------------------------------------------------------------------

    def hold(self) -> str:
        """Lock (or, for read-only files, pin a snapshot of) every store file for the rest of the run;
        returns how, for the report."""
        if not self.db.readonly:
            try:
                self.db.lock()
            except SqliteBusy:
                raise SourceBusy(
                    f"the SQLite stores in {self.directory} are being written by another process",
                    "stop ingestion, processing, cron jobs and the API that use them, then run again",
                ) from None
        if self.db.readonly:
            self.db.snapshot(self.stores)
        self.db.query_only()
        return "read snapshot (files are read-only)" if self.db.readonly else "write lock held"

    def close(self) -> None:
        self.db.close()

    # --- introspection (system catalogs) ---------------------------------------------------------------------------------

    def migration_ids(self, store: str) -> list[str] | None:
        try:
            rows = self.db.all(introspect.sqlite_migration_ids_sql(store))
        except SqliteQueryFailed:  # no _yoyo_migration table: never migrated
            return None
        return [_text(r[0]) for r in rows]

    def tables(self, store: str) -> list[str]:
        names = [_text(r[0]) for r in self.db.all(introspect.sqlite_tables_sql(store))]
        return [n for n in names if n not in introspect.YOYO_TABLES]

    def columns(self, store: str, table: str) -> list[tuple[str, str, bool, int]]:
        """(name, declared type, not null, position in the primary key or 0) per column."""
        rows = self.db.all(introspect.sqlite_columns_sql(store, table))
        return [(_text(r[1]), _text(r[2] or "").upper(), bool(r[3]), int(r[5])) for r in rows]

    def parents(self, store: str, table: str) -> list[str]:
        return sorted({_text(r[2]) for r in self.db.all(introspect.sqlite_parents_sql(store, table))})

    def foreign_key_violations(self, store: str) -> list[tuple[str, int, str]]:
        """(table, rowid, parent table) for every row whose parent row is missing."""
        rows = self.db.all(introspect.sqlite_foreign_key_check_sql(store))
        return [(_text(r[0]), r[1], _text(r[2])) for r in rows]

    def count(self, table: Table, bounds: KeyRange | None = None) -> int:
        statement, params = introspect.sqlite_range_count_sql(table, bounds)
        row = self.db.one(statement, params)
        return int(row[0]) if row else 0

    # --- rows ------------------------------------------------------------------------------------

    def check_batches(
        self, table: Table, bounds: KeyRange | None, batch: int = 500
    ) -> Iterator[list[tuple[Any, ...]]]:
        statement, params = introspect.sqlite_check_sql(table, bounds)
        return self.db.batches(statement, params, batch)

    def feed_batches(
        self, table: Table, *, nul_flag: bool, batch: int = 500
    ) -> Iterator[list[tuple[Any, ...]]]:
        return self.db.batches(introspect.sqlite_feed_sql(table, nul_flag=nul_flag), (), batch)

    def hash_rows(
        self, table: Table, bounds: KeyRange | None, batch: int = 2000
    ) -> Iterator[tuple[Any, ...]]:
        statement, params = introspect.sqlite_hash_sql(table, bounds)
        return self.db.stream(statement, params, batch)

    def typed_row(self, table: Table, key: tuple[Any, ...]) -> tuple[Any, ...]:
        """(typeof, value) pairs flattened, for diagnosing one row."""
        return self.db.one(introspect.sqlite_row_sql(table), _key_params(key)) or ()

    def raw_row(self, table: Table, key: tuple[Any, ...]) -> tuple[Any, ...]:
        return self.db.one(introspect.sqlite_raw_row_sql(table), _key_params(key)) or ()

    def key_of_rowid(self, table: Table, rowid: int | None) -> tuple[Any, ...] | None:
        """The primary key of a row named by rowid (None for WITHOUT ROWID tables)."""
        if rowid is None:
            return None
        try:
            return self.db.one(introspect.sqlite_key_by_rowid_sql(table), (rowid,))
        except SqliteQueryFailed:  # WITHOUT ROWID
            return None

    def raw_boundaries(
        self, table: Table, step: int, bounds: KeyRange | None = None
    ) -> list[tuple[Any, ...]]:
        """Every `step`-th key in key order, as read (bytes for text), to compare with streamed keys."""
        statement, params = introspect.sqlite_boundaries_sql(table, bounds)
        return [tuple(row) for row in self.db.all(statement, [*params, step])]

    def boundaries(self, table: Table, bounds: KeyRange | None, step: int) -> list[tuple[Any, ...]]:
        return [normalise_key(table, row) for row in self.raw_boundaries(table, step, bounds)]


def _key_params(key: tuple[Any, ...]) -> list[Any]:
    return [k.encode() if isinstance(k, str) else k for k in key]


def normalise_key(table: Table, row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Key values as str/int, comparable with what PostgreSQL returns."""
    return tuple(v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in row[: len(table.key)])
