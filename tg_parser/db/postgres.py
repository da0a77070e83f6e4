"""The executor on psycopg 3 with one `psycopg_pool.ConnectionPool` per process.

Each store is a schema (`ingestion`, `raw`, `processing`) in one database. Connections carry
`application_name`, `statement_timeout` and `TimeZone=UTC` as startup options, so no statement is spent
on setup and every timestamptz comes back as an aware UTC datetime.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool, PoolTimeout

from tg_parser.db.base import Database, Params, Row, Session
from tg_parser.db.catalog import Query, SqlCatalog
from tg_parser.db.codec import adapt_pg_params
from tg_parser.db.locks import LockBusy, lock_key
from tg_parser.errors import ConfigError, DatabaseUnavailable

_cursor_ids = itertools.count(1)


def _loads(data: bytes | str) -> object:
    """jsonb values parsed by orjson (several times faster than the stdlib on read-heavy paths); the
    stdlib takes what orjson refuses (integers beyond 64 bits)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


set_json_loads(_loads)


@dataclass(frozen=True)
class PgTarget:
    """Where PostgreSQL is. The password is kept out of repr and out of every message."""

    host: str
    port: int
    dbname: str
    user: str
    password: str | None = field(default=None, repr=False)
    options: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return f"PostgreSQL {self.user}@{self.host}:{self.port}/{self.dbname}"

    def connect_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "dbname": self.dbname,
            "user": self.user,
        }
        if self.password is not None:
            kwargs["password"] = self.password
        kwargs.update(self.options)
        return kwargs


def describe_connect_error(target: PgTarget, exc: BaseException) -> DatabaseUnavailable:
    """Turn a driver error into one line that names host and port and never the password."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    if target.password:
        reason = reason.replace(target.password, "***")
    return DatabaseUnavailable(
        f"cannot connect to {target.describe()}: {reason}",
        "check that the server is running and DATABASE_URL or DB_HOST/DB_PORT/DB_USER/DB_PASSWORD are right",
    )


class PgSession(Session):
    def __init__(self, connection: psycopg.Connection) -> None:
        self.connection = connection

    @staticmethod
    def _sql(query: Query) -> str:
        return query.pyformat  # rewritten once per query (Query.pyformat), not per statement

    def execute(self, query: Query, params: Params = None) -> int:
        with self.connection.cursor() as cursor:
            cursor.execute(self._sql(query), adapt_pg_params(params))
            return cursor.rowcount

    def fetch_all(self, query: Query, params: Params = None) -> list[Row]:
        with self.connection.cursor(row_factory=dict_row) as cursor:
            cursor.execute(self._sql(query), adapt_pg_params(params))
            return cursor.fetchall()

    def fetch_one(self, query: Query, params: Params = None) -> Row | None:
        with self.connection.cursor(row_factory=dict_row) as cursor:
            cursor.execute(self._sql(query), adapt_pg_params(params))
            return cursor.fetchone()

    def fetch_tuples(self, query: Query, params: Params = None) -> list[tuple[Any, ...]]:
        with self.connection.cursor() as cursor:
            cursor.execute(self._sql(query), adapt_pg_params(params))
            return cursor.fetchall()

    def execute_many(self, query: Query, rows: Sequence[Mapping[str, Any]]) -> int:
        with self.connection.cursor() as cursor:
            cursor.executemany(self._sql(query), [adapt_pg_params(r) for r in rows])
            return cursor.rowcount

    def stream(self, query: Query, params: Params, batch_size: int) -> Iterator[Row]:
        name = f"tgp_stream_{next(_cursor_ids)}"
        with self.connection.cursor(name=name, row_factory=dict_row) as cursor:
            cursor.itersize = batch_size
            cursor.execute(self._sql(query), adapt_pg_params(params))
            yield from cursor

    def stream_batches(self, query: Query, params: Params, batch_size: int) -> Iterator[list[tuple]]:
        # The server-side cursor of `stream`, with psycopg's tuple rows: each FETCH is parsed in C in one
        # go. (COPY ... TO STDOUT would let the server run ahead of the client, but psycopg parses COPY
        # rows one at a time in Python, which costs the client more than the overlap saves.)
        name = f"tgp_stream_{next(_cursor_ids)}"
        with self.connection.cursor(name=name) as cursor:
            cursor.execute(self._sql(query), adapt_pg_params(params))
            while batch := cursor.fetchmany(batch_size):
                yield batch

    def explain(self, query: Query, params: Params = None) -> list[str]:
        with self.connection.cursor() as cursor:
            cursor.execute("EXPLAIN " + self._sql(query), adapt_pg_params(params))
            return [row[0] for row in cursor.fetchall()]

    def copy_rows(
        self, schema: str, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
    ) -> int:
        statement = sql.SQL("COPY {}.{} ({}) FROM STDIN").format(
            sql.Identifier(schema), sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        count = 0
        with self.connection.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
        return count


# A connection handed back to the pool less than this long ago is lent out again without a check: the
# check is a round trip of its own (on a hot API route it doubled the database time per request), and a
# connection that worked a moment ago is alive unless the server went away in that moment, in which case
# the statement fails, the pool discards the connection, and the next checkout checks again.
RECENTLY_USED = 1.0


def _note_return(connection: psycopg.Connection) -> None:
    connection.tgp_returned_at = time.monotonic()  # type: ignore[attr-defined]


def _check_unless_just_used(connection: psycopg.Connection) -> None:
    returned = getattr(connection, "tgp_returned_at", None)
    if returned is not None and time.monotonic() - returned < RECENTLY_USED:
        return
    ConnectionPool.check_connection(connection)


class PostgresDatabase(Database):
    dialect = "postgres"

    def __init__(
        self,
        target: PgTarget,
        catalog: SqlCatalog,
        *,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 30.0,
        max_idle: float = 600.0,
        max_lifetime: float = 3600.0,
        statement_timeout_ms: int = 0,
        application_name: str = "tg-parser",
        prepare_threshold: int | None = 5,
        connect_timeout: int = 10,
    ) -> None:
        super().__init__()
        self.target = target
        self.catalog = catalog
        startup = f"-c TimeZone=UTC -c statement_timeout={int(statement_timeout_ms)}"
        kwargs = target.connect_kwargs()
        kwargs.setdefault("connect_timeout", connect_timeout)
        kwargs.setdefault("application_name", application_name)  # DATABASE_URL's ?application_name= wins
        kwargs["options"] = (kwargs.get("options", "") + " " + startup).strip()
        kwargs["prepare_threshold"] = prepare_threshold
        self._kwargs = kwargs
        # Probe once with a plain connection: the pool would only report a timeout, while the operator
        # needs the reason (refused, wrong password, unknown database).
        try:
            psycopg.connect(**kwargs).close()
        except psycopg.Error as exc:
            raise describe_connect_error(target, exc) from None
        self.pool = ConnectionPool(
            kwargs=kwargs,
            min_size=min_size,
            max_size=max(max_size, min_size, 1),
            timeout=timeout,
            max_idle=max_idle,
            max_lifetime=max_lifetime,
            check=_check_unless_just_used,
            reset=_note_return,
            name="tg-parser",
            open=False,
        )
        try:
            self.pool.open(wait=True, timeout=max(timeout, 1.0))
        except PoolTimeout as exc:
            self.pool.close()
            raise describe_connect_error(target, exc) from None

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self.pool.connection() as connection:
            yield PgSession(connection)

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        with self.pool.connection() as connection, connection.transaction():
            yield PgSession(connection)

    def copy_rows(
        self, schema: str, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
    ) -> int:
        """Bulk-load rows with COPY; joins the current transaction when there is one."""
        active = self._tx.get()
        if active is not None:
            assert isinstance(active, PgSession)
            return active.copy_rows(schema, table, columns, rows)
        with self._transaction() as session:
            assert isinstance(session, PgSession)
            return session.copy_rows(schema, table, columns, rows)

    @contextmanager
    def hold_lock(self, name: str) -> Iterator[None]:
        # A session-level advisory lock lives on one connection, held (in autocommit, so no transaction
        # stays open) for the whole block; the block's own work needs a second connection from the pool.
        if self.pool.max_size < 2:
            raise ConfigError(
                "DB_POOL_MAX_SIZE is 1, but holding a lock needs 2 connections (one holds the lock)",
                "set DB_POOL_MAX_SIZE to 2 or more",
            )
        key = {"key": lock_key(name)}
        with self.pool.connection() as connection:
            connection.autocommit = True
            session = PgSession(connection)
            try:
                row = session.fetch_one(self.query("session_lock_try"), key)
                if not row or not row["acquired"]:
                    raise LockBusy(name, self._lock_holder(key))
                try:
                    yield
                finally:
                    # If the connection is gone, so is the lock: nothing is left to release.
                    with suppress(psycopg.Error):
                        session.fetch_one(self.query("session_lock_release"), key)
            finally:
                if not connection.closed:
                    connection.autocommit = False

    def _lock_holder(self, key: dict[str, int]) -> str | None:
        holder = self.fetch_one("session_lock_holder", key)
        if not holder or not holder.get("pid"):
            return None
        where = f" from {holder['client_addr']}" if holder.get("client_addr") else ""
        return f"PostgreSQL backend pid {holder['pid']}{where}, {holder.get('application_name') or 'unknown app'}"

    def ping(self, timeout: float) -> None:
        try:
            with self.pool.connection(timeout=timeout) as connection:
                connection.execute("SELECT 1").fetchone()
        except (PoolTimeout, psycopg.Error) as exc:
            raise describe_connect_error(self.target, exc) from None

    def applied_migrations(self, store: str) -> list[str] | None:
        statement = sql.SQL("SELECT migration_id FROM {}._yoyo_migration ORDER BY applied_at_utc").format(
            sql.Identifier(store)
        )
        with self.pool.connection() as conn:
            try:
                with conn.transaction():
                    rows = conn.execute(statement).fetchall()
            except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
                return None
        return [row[0] for row in rows]

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection for db/ plumbing (migrations, locks, the migrator's catalog reads)."""
        with self.pool.connection() as connection:
            yield connection

    def close(self) -> None:
        self.pool.close()

    def describe(self) -> str:
        return self.target.describe()

    def stats(self) -> dict[str, Any]:
        stats = self.pool.get_stats()
        keep = (
            "pool_min",
            "pool_max",
            "pool_size",
            "pool_available",
            "requests_waiting",
            "requests_num",
            "requests_wait_ms",
        )
        return {key: stats.get(key, 0) for key in keep}
