"""The executor on stdlib sqlite3: three store files attached to one connection.

The connection's main database is in memory; `ingestion_state.sqlite`, `raw_storage.sqlite` and
`processing_storage.sqlite` are attached as `ingestion`, `raw` and `processing`, so the same SQL text
(`raw.raw_messages`) runs on both dialects. Each file uses WAL, a busy timeout and foreign keys.

Threads share the one connection under a lock; write transactions start with BEGIN IMMEDIATE so two
processes queue on the busy timeout instead of failing with "database is locked" at commit.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from tg_parser.db.base import Database, Params, Row, Session
from tg_parser.db.catalog import Query, SqlCatalog
from tg_parser.db.codec import encode_sqlite_params, register_sqlite_converters
from tg_parser.db.locks import HeldLock, file_lock, lock_file
from tg_parser.db.resources import STORES
from tg_parser.errors import DatabaseUnavailable, LockHeld, StoreNotInitialised

STORE_FILES: dict[str, str] = {
    "ingestion": "ingestion_state.sqlite",
    "raw": "raw_storage.sqlite",
    "processing": "processing_storage.sqlite",
}


def store_path(directory: Path, store: str) -> Path:
    return directory / STORE_FILES[store]


def require_store_files(directory: Path, stores: Sequence[str] = STORES) -> None:
    """Refuse, naming the files, when a store file is missing: only `tg-parser init` (or `db upgrade`)
    creates them, so a read never leaves an empty file that later reads as a schema that is behind."""
    missing = [STORE_FILES[store] for store in stores if not store_path(directory, store).exists()]
    if missing:
        raise StoreNotInitialised(
            f"the SQLite stores in {directory} are not initialised (missing {', '.join(missing)})",
            "run 'tg-parser init' (or 'tg-parser db upgrade')",
        )


def _dict_rows(cursor: sqlite3.Cursor, rows: list[tuple]) -> list[Row]:
    names = [column[0] for column in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in rows]


class SqliteSession(Session):
    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def execute(self, query: Query, params: Params = None) -> int:
        cursor = self.connection.execute(query.sql, encode_sqlite_params(params))
        return cursor.rowcount

    def fetch_all(self, query: Query, params: Params = None) -> list[Row]:
        cursor = self.connection.execute(query.sql, encode_sqlite_params(params))
        return _dict_rows(cursor, cursor.fetchall())

    def fetch_one(self, query: Query, params: Params = None) -> Row | None:
        cursor = self.connection.execute(query.sql, encode_sqlite_params(params))
        row = cursor.fetchone()
        return None if row is None else _dict_rows(cursor, [row])[0]

    def fetch_tuples(self, query: Query, params: Params = None) -> list[tuple[Any, ...]]:
        return self.connection.execute(query.sql, encode_sqlite_params(params)).fetchall()

    def execute_many(self, query: Query, rows: Sequence[Mapping[str, Any]]) -> int:
        cursor = self.connection.executemany(query.sql, [encode_sqlite_params(r) for r in rows])
        return cursor.rowcount

    def execute_many_tuples(self, query: Query, rows: Sequence[tuple[Any, ...]]) -> int:
        return self.connection.executemany(query.numbered[0], rows).rowcount

    def stream(self, query: Query, params: Params, batch_size: int) -> Iterator[Row]:
        cursor = self.connection.execute(query.sql, encode_sqlite_params(params))
        try:
            names = [column[0] for column in cursor.description or ()]
            while chunk := cursor.fetchmany(batch_size):
                for row in chunk:
                    yield dict(zip(names, row, strict=True))
        finally:
            cursor.close()

    def stream_batches(self, query: Query, params: Params, batch_size: int) -> Iterator[list[tuple]]:
        cursor = self.connection.execute(query.sql, encode_sqlite_params(params))
        try:
            while chunk := cursor.fetchmany(batch_size):
                yield chunk
        finally:
            cursor.close()

    def explain(self, query: Query, params: Params = None) -> list[str]:
        cursor = self.connection.execute("EXPLAIN QUERY PLAN " + query.sql, encode_sqlite_params(params))
        return [f"{'  ' * _depth(row, cursor)}{row[-1]}" for row in cursor.fetchall()]


def _depth(row: tuple, cursor: sqlite3.Cursor) -> int:
    # EXPLAIN QUERY PLAN rows are (id, parent, notused, detail); indent by nesting.
    return 0 if row[1] == 0 else 1


def _busy_error(exc: sqlite3.OperationalError, directory: Path) -> Exception:
    if "locked" not in str(exc) and "busy" not in str(exc):
        return exc
    return LockHeld(
        f"the SQLite stores in {directory} are locked by another process ({exc})",
        "another tg-parser process is writing; retry later, or raise DB_SQLITE_BUSY_TIMEOUT",
    )


class SqliteDatabase(Database):
    dialect = "sqlite"
    reads_ahead = True

    def __init__(
        self,
        directory: Path,
        catalog: SqlCatalog,
        busy_timeout_ms: int = 30_000,
        *,
        create: bool = False,
        stores: Sequence[str] = STORES,
    ) -> None:
        """Attach the files of `stores` (a store left out answers as one without bookkeeping). Unless
        `create`, a missing file is refused (StoreNotInitialised) and none is created: sqlite3 creates a
        file on connect, so each is attached with `mode=rw`, which opens only an existing file."""
        super().__init__()
        register_sqlite_converters()
        self.directory = directory
        self.catalog = catalog
        self._lock = threading.RLock()
        if not create:
            require_store_files(directory, stores)
        try:
            if create:
                directory.mkdir(parents=True, exist_ok=True)
            self._connection = sqlite3.connect(
                ":memory:",
                detect_types=sqlite3.PARSE_DECLTYPES,
                check_same_thread=False,
                isolation_level=None,
                timeout=busy_timeout_ms / 1000,
                uri=True,  # ATTACH takes file: URIs (mode=rw); ":memory:" is not one and stays in memory
            )
            self._connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            for store in stores:
                path = store_path(directory, store)
                target = str(path) if create else path.resolve().as_uri() + "?mode=rw"
                self._connection.execute(f"ATTACH DATABASE ? AS {store}", (target,))
                # WAL persists in the file: switching needs an exclusive lock, so only switch once.
                mode = self._connection.execute(f"PRAGMA {store}.journal_mode").fetchone()[0]
                if str(mode).lower() != "wal":
                    self._connection.execute(f"PRAGMA {store}.journal_mode = WAL")
                self._connection.execute(f"PRAGMA {store}.synchronous = NORMAL")
            self._connection.execute("PRAGMA foreign_keys = ON")
        except (sqlite3.Error, OSError) as exc:
            if hasattr(self, "_connection"):
                self._connection.close()
            if not create:
                require_store_files(directory, stores)  # removed between the check and the ATTACH
            raise DatabaseUnavailable(
                f"cannot open the SQLite stores in {directory}: {exc}",
                "check that DB_SQLITE_DIR exists and is writable",
            ) from None

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._lock:
            try:
                yield SqliteSession(self._connection)
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    raise _busy_error(exc, self.directory) from None
                raise

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        with self._lock:
            try:
                self._connection.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise _busy_error(exc, self.directory) from None
            try:
                yield SqliteSession(self._connection)
                self._connection.execute("COMMIT")
            except BaseException as exc:
                # SQLite may already have rolled back (disk full, I/O error): only roll back what is open,
                # so the real cause is what the caller sees.
                if self._connection.in_transaction:
                    self._connection.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                    raise _busy_error(exc, self.directory) from None
                raise

    def _stream_session(self) -> AbstractContextManager[Session]:
        # A read needs no write lock: the cursor reads one consistent WAL snapshot.
        return self._session()

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def describe(self) -> str:
        return f"SQLite in {self.directory}"

    def stats(self) -> dict[str, Any]:
        return {
            "files": {
                store: {
                    "path": str(store_path(self.directory, store)),
                    "bytes": store_path(self.directory, store).stat().st_size
                    if store_path(self.directory, store).exists()
                    else 0,
                }
                for store in STORES
            }
        }

    def hold_lock(self, name: str) -> AbstractContextManager[HeldLock]:
        return file_lock(lock_file(self.directory, name), name)

    def ping(self, timeout: float) -> None:
        # One connection shared under a lock: waiting for it is waiting for the current statement.
        if not self._lock.acquire(timeout=timeout):
            raise DatabaseUnavailable(
                f"the SQLite stores in {self.directory} stayed busy for {timeout:g} s", "retry later"
            )
        try:
            self._connection.execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise DatabaseUnavailable(
                f"the SQLite stores in {self.directory} do not answer: {exc}", "check the files"
            ) from None
        finally:
            self._lock.release()

    def applied_migrations(self, store: str) -> list[str] | None:
        if store not in STORES:
            raise ValueError(f"unknown store {store!r}")
        with self._lock:
            try:
                rows = self._connection.execute(
                    f"SELECT migration_id FROM {store}._yoyo_migration ORDER BY applied_at_utc"
                ).fetchall()
            except sqlite3.OperationalError:
                return None
        return [row[0] for row in rows]

    def migration_compatibility(self, store: str) -> dict[str, str]:
        if store not in STORES:
            raise ValueError(f"unknown store {store!r}")
        with self._lock:
            try:
                rows = self._connection.execute(
                    f"SELECT migration_id, compatibility FROM {store}._yoyo_tg_compat"
                ).fetchall()
            except sqlite3.OperationalError:
                return {}
        return {row[0]: row[1] for row in rows}

    def raw_connection(self) -> sqlite3.Connection:
        """The underlying connection, for the migrator's catalog reads only."""
        return self._connection
