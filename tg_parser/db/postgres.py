"""The executor on psycopg 3 with one `psycopg_pool.ConnectionPool` per process.

Each store is a schema (`ingestion`, `raw`, `processing`) in one database. In the default session
pool mode connections carry `TimeZone=UTC` and the three session timeouts (`statement_timeout`,
`lock_timeout`, `idle_in_transaction_session_timeout`) as startup options, so no statement is spent on
setup and every timestamptz comes back as an aware UTC datetime.

In transaction pool mode (`DB_POOL_MODE=transaction`, for PgBouncer transaction pooling) the tool keeps
no session state: no startup options (the role must default to TimeZone UTC; the timeouts are set with
`SET LOCAL` at the start of each explicit transaction, and the role's defaults cover single statements),
no prepared statements, and named locks live in a lock table instead of session advisory locks.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from loguru import logger
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool, PoolTimeout

from tg_parser.db.base import Database, Params, Row, Session
from tg_parser.db.catalog import Query, SqlCatalog
from tg_parser.db.codec import adapt_pg_params
from tg_parser.db.locks import CONNECTION_BROKE, ROW_EXPIRED, ROW_TAKEN_OVER, HeldLock, LockBusy, lock_key
from tg_parser.errors import ConfigError, DatabaseTimeout, DatabaseUnavailable, TgParserError

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


@dataclass(frozen=True)
class Timeouts:
    """The session timeouts in milliseconds (0 disables one): DB_STATEMENT_TIMEOUT, DB_LOCK_TIMEOUT and
    DB_IDLE_IN_TRANSACTION_TIMEOUT."""

    statement_ms: int = 0
    lock_ms: int = 0
    idle_in_transaction_ms: int = 0

    def startup_options(self) -> str:
        return (
            f"-c statement_timeout={int(self.statement_ms)} -c lock_timeout={int(self.lock_ms)}"
            f" -c idle_in_transaction_session_timeout={int(self.idle_in_transaction_ms)}"
        )


def translate_timeout(exc: BaseException, timeouts: Timeouts) -> DatabaseTimeout | None:
    """One clear line for a timeout the server enforced, naming the setting to raise; None otherwise."""
    text = " ".join(str(exc).split())
    if isinstance(exc, psycopg.errors.QueryCanceled) and "statement timeout" in text:
        return DatabaseTimeout(
            f"PostgreSQL cancelled a statement that ran longer than DB_STATEMENT_TIMEOUT "
            f"({timeouts.statement_ms} ms)",
            "raise DB_STATEMENT_TIMEOUT (0 disables it), or look for what made the statement slow",
        )
    if isinstance(exc, psycopg.errors.LockNotAvailable) and "lock timeout" in text:
        return DatabaseTimeout(
            f"PostgreSQL gave up waiting for a lock after DB_LOCK_TIMEOUT ({timeouts.lock_ms} ms)",
            "another session holds the lock (a migration, a long transaction); retry, or raise DB_LOCK_TIMEOUT",
        )
    if isinstance(exc, psycopg.errors.IdleInTransactionSessionTimeout) or (
        isinstance(exc, psycopg.OperationalError) and "idle-in-transaction timeout" in text
    ):
        return DatabaseTimeout(
            "PostgreSQL ended a session whose transaction sat idle longer than DB_IDLE_IN_TRANSACTION_TIMEOUT "
            f"({timeouts.idle_in_transaction_ms} ms)",
            "raise DB_IDLE_IN_TRANSACTION_TIMEOUT, and report it: the tool should not keep a transaction idle",
        )
    return None


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
        # Binary results: integers and text arrive as they are stored (no int8out on the server, no
        # parsing of digits in the client); the values are the same Python objects as in text format.
        with self.connection.cursor(binary=True) as cursor:
            cursor.execute(self._sql(query), adapt_pg_params(params))
            return cursor.fetchall()

    def execute_many(self, query: Query, rows: Sequence[Mapping[str, Any]]) -> int:
        with self.connection.cursor() as cursor:
            cursor.executemany(self._sql(query), [adapt_pg_params(r) for r in rows])
            return cursor.rowcount

    def execute_many_tuples(self, query: Query, rows: Sequence[tuple[Any, ...]]) -> int:
        names = query.numbered[1]
        return self.execute_many(query, [dict(zip(names, row, strict=True)) for row in rows])

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


def _check_unless_just_used(connection: psycopg.Connection) -> None:
    returned = getattr(connection, "tgp_returned_at", None)
    if returned is not None and time.monotonic() - returned < RECENTLY_USED:
        return
    ConnectionPool.check_connection(connection)


class PostgresDatabase(Database):
    dialect = "postgres"
    json_timestamps_cast = True
    inserts_json_batches = True
    atomic_across_stores = True
    text_holds_nul = False
    reads_ahead_in_sessions = True

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
        lock_timeout_ms: int = 0,
        idle_in_transaction_timeout_ms: int = 0,
        application_name: str = "tg-parser",
        prepare_threshold: int | None = 5,
        connect_timeout: int = 10,
        pool_mode: str = "session",
        lock_ttl: float = 60.0,
    ) -> None:
        super().__init__()
        self.target = target
        self.catalog = catalog
        if pool_mode not in ("session", "transaction"):
            raise ConfigError(f"DB_POOL_MODE must be session or transaction (got {pool_mode!r})")
        self.pool_mode = pool_mode
        self.timeouts = Timeouts(statement_timeout_ms, lock_timeout_ms, idle_in_transaction_timeout_ms)
        self.lock_ttl = lock_ttl
        # Connections this process has lent out now (_lend), to tell an exhausted pool from an outage.
        self._lent = 0
        self._lent_lock = threading.Lock()
        # Set inside `long_statements()`: transactions opened there lift the statement timeout.
        self._unbounded: contextvars.ContextVar[bool] = contextvars.ContextVar(
            f"unbounded-{id(self)}", default=False
        )
        kwargs = target.connect_kwargs()
        kwargs.setdefault("connect_timeout", connect_timeout)
        kwargs.setdefault("application_name", application_name)  # DATABASE_URL's ?application_name= wins
        if pool_mode == "session":
            startup = "-c TimeZone=UTC " + self.timeouts.startup_options()
            kwargs["options"] = (kwargs.get("options", "") + " " + startup).strip()
            kwargs["prepare_threshold"] = prepare_threshold
        else:
            # PgBouncer in transaction mode refuses the `options` startup parameter and cannot keep a
            # prepared statement on the server connection a later transaction gets.
            kwargs["prepare_threshold"] = None
        self._kwargs = kwargs
        # Probe once with a plain connection: the pool would only report a timeout, while the operator
        # needs the reason (refused, wrong password, unknown database).
        try:
            probe = psycopg.connect(**kwargs)
        except psycopg.Error as exc:
            raise describe_connect_error(target, exc) from None
        with probe:
            zone = probe.info.parameter_status("TimeZone") or ""
        if pool_mode == "transaction" and zone.upper() not in (
            "UTC",
            "ETC/UTC",
            "GMT",
            "ETC/GMT",
            "UCT",
            "ZULU",
        ):
            raise ConfigError(
                f"DB_POOL_MODE=transaction needs the server session's TimeZone to be UTC (it is {zone!r}): "
                "in that mode no startup option sets it",
                f"run ALTER ROLE {target.user} SET TimeZone = 'UTC' (see docs/PRODUCTION_DEPLOYMENT.md)",
            )
        self.pool = ConnectionPool(
            kwargs=kwargs,
            min_size=min_size,
            max_size=max(max_size, min_size, 1),
            timeout=timeout,
            max_idle=max_idle,
            max_lifetime=max_lifetime,
            check=_check_unless_just_used,
            name="tg-parser",
            open=False,
        )
        try:
            self.pool.open(wait=True, timeout=max(timeout, 1.0))
        except PoolTimeout as exc:
            self.pool.close()
            raise describe_connect_error(target, exc) from None

    @contextmanager
    def _lend(self, timeout: float | None = None) -> Iterator[psycopg.Connection]:
        """A pooled connection, stamped when handed back (RECENTLY_USED).

        The stamp is put here rather than by the pool's `reset` callback: with a reset callback the pool
        returns every connection through its worker thread, a thread switch per checkout (~40 µs of CPU
        here, a quarter of a readiness probe) before the connection can be lent again. A pool that
        cannot lend a connection in time, or a connection that broke under a statement, means the
        database is unavailable: one DatabaseUnavailable (exit 3, HTTP 503), not a driver error.
        """
        held: psycopg.Connection | None = None
        try:
            with self.pool.connection(timeout=timeout) as connection:
                with self._lent_lock:
                    self._lent += 1
                held = connection
                try:
                    yield connection
                except psycopg.OperationalError as exc:
                    if connection.broken or connection.closed:
                        raise describe_connect_error(self.target, exc) from None
                    raise
                finally:
                    with self._lent_lock:
                        self._lent -= 1
                    connection.tgp_returned_at = time.monotonic()  # type: ignore[attr-defined]
        except PoolTimeout as exc:
            raise self._pool_timeout(exc, timeout) from None
        except psycopg.OperationalError as exc:
            # The pool commits a connection's implicit transaction as it takes it back: a server that
            # went away after the statement breaks that commit, outside the block above.
            if held is not None and (held.broken or held.closed):
                raise describe_connect_error(self.target, exc) from None
            raise

    def _pool_timeout(self, exc: PoolTimeout, waited: float | None) -> DatabaseUnavailable:
        """No connection within the pool timeout (or the caller's own wait, `waited`): either every
        connection of the pool was lent out for all that time (this process has more concurrent work than
        DB_POOL_MAX_SIZE connections: the settings are the fix), or the pool could not open one (the
        server is the problem)."""
        # Counted here, not from the pool's stats: the pool keeps a slot counted while it retries opening a
        # connection to a server that went away, which is an outage, not exhaustion.
        with self._lent_lock:
            lent = self._lent
        if lent < self.pool.max_size:
            return describe_connect_error(self.target, exc)
        within = f"{self.pool.timeout:g} s (DB_POOL_TIMEOUT)" if waited is None else f"{waited:g} s"
        return DatabaseUnavailable(
            f"no connection to {self.target.describe()} came free within {within}: "
            f"all DB_POOL_MAX_SIZE ({self.pool.max_size}) connections of this process's pool were in use",
            "raise DB_POOL_MAX_SIZE (within the server's max_connections)"
            + (" or DB_POOL_TIMEOUT" if waited is None else "")
            + ", or give the process less concurrent work",
        )

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._translated(), self._lend() as connection:
            if self._unbounded.get():
                connection.execute("SET LOCAL statement_timeout = 0")  # this implicit transaction only
            yield PgSession(connection)

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        with self._translated(), self._lend() as connection, connection.transaction():
            self._set_local_timeouts(connection)
            yield PgSession(connection)

    def _set_local_timeouts(self, connection: psycopg.Connection) -> None:
        """At the start of a transaction: in transaction pool mode the timeouts (no session carries
        them), and inside `long_statements()` no statement timeout. One round trip, or none."""
        unbounded = self._unbounded.get()
        if self.pool_mode == "transaction":
            t = self.timeouts
            statement_ms = 0 if unbounded else t.statement_ms
            connection.execute(
                "SELECT set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true),"
                " set_config('idle_in_transaction_session_timeout', %s, true)",
                (str(statement_ms), str(t.lock_ms), str(t.idle_in_transaction_ms)),
            )
        elif unbounded:
            connection.execute("SET LOCAL statement_timeout = 0")

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as exc:
            timeout = translate_timeout(exc, self.timeouts)
            if timeout is None:
                raise
            raise timeout from None

    @contextmanager
    def long_statements(self) -> Iterator[None]:
        """Lift the statement timeout for the transactions this thread opens in the block (a bulk COPY,
        an index build, a batched prune): `SET LOCAL statement_timeout = 0` in each, so the pooled
        session keeps its timeout for everyone else. The lock and idle timeouts still apply."""
        token = self._unbounded.set(True)
        try:
            yield
        finally:
            self._unbounded.reset(token)

    def copy_rows(
        self, schema: str, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
    ) -> int:
        """Bulk-load rows with COPY; joins the current transaction when there is one."""
        active = self._tx.get()
        if active is not None:
            assert isinstance(active, PgSession)
            return active.copy_rows(schema, table, columns, rows)
        with self.long_statements(), self._transaction() as session:
            assert isinstance(session, PgSession)
            return session.copy_rows(schema, table, columns, rows)

    def hold_lock(self, name: str) -> AbstractContextManager[HeldLock]:
        if self.pool_mode == "transaction":
            return self._hold_table_lock(name)
        return self._hold_advisory_lock(name)

    @contextmanager
    def _hold_table_lock(self, name: str) -> Iterator[HeldLock]:
        # No session state survives a transaction behind PgBouncer, so the lock is a row: taken with one
        # short statement, kept alive by a heartbeat thread (short statements too), deleted at the end. No
        # transaction stays open for the block. A crashed holder's row expires after `lock_ttl` seconds.
        params = {"name": name, "owner": uuid.uuid4().hex, "ttl": float(self.lock_ttl)}
        renewed = [time.monotonic()]  # when the last successful take or renewal was sent
        row = self.fetch_one("lock_table_try", {**params, "host": socket.gethostname(), "pid": os.getpid()})
        if row is None:
            holder = self.fetch_one("lock_table_holder", {"name": name})
            who = None
            if holder:
                who = f"pid {holder['pid']} on {holder['host']} since {holder['acquired_at'].isoformat()}"
            raise LockBusy(name, who)
        stop = threading.Event()
        lost = threading.Event()  # set by the heartbeat; the holder's check() reads it (no round trip)

        def heartbeat() -> None:
            while not stop.wait(self.lock_ttl / 3):
                try:
                    sent = time.monotonic()
                    if self.execute("lock_table_renew", params) == 0:
                        logger.error("lock {!r} was lost (taken over after it expired)", name)
                        lost.set()
                        return
                    renewed[0] = sent
                except Exception as exc:  # the next beat retries; the lock lasts lock_ttl
                    logger.warning("lock {!r}: renewing failed: {}", name, type(exc).__name__)

        beat = threading.Thread(target=heartbeat, name=f"lock-{name}", daemon=True)
        beat.start()

        def probe() -> str | None:
            # The heartbeat saw the row taken over; or it has not renewed the row for lock_ttl seconds
            # (the database was unreachable), so the row has expired and any run may take it.
            if lost.is_set():
                return ROW_TAKEN_OVER
            if time.monotonic() - renewed[0] >= self.lock_ttl:
                return ROW_EXPIRED
            return None

        try:
            yield HeldLock(name, probe)
        finally:
            stop.set()
            beat.join(timeout=self.pool.timeout + 1)
            with suppress(psycopg.Error, TgParserError):
                self.execute("lock_table_release", params)

    @contextmanager
    def _hold_advisory_lock(self, name: str) -> Iterator[HeldLock]:
        # A session-level advisory lock lives on one connection, held (in autocommit, so no transaction
        # stays open) for the whole block; the block's own work needs a second connection from the pool.
        if self.pool.max_size < 2:
            raise ConfigError(
                "DB_POOL_MAX_SIZE is 1, but holding a lock needs 2 connections (one holds the lock)",
                "set DB_POOL_MAX_SIZE to 2 or more",
            )
        key = {"key": lock_key(name)}
        with self._lend() as connection:
            connection.autocommit = True
            session = PgSession(connection)
            try:
                row = session.fetch_one(self.query("session_lock_try"), key)
                if not row or not row["acquired"]:
                    raise LockBusy(name, self._lock_holder(key))

                def probe() -> str | None:
                    # Only this session can release its advisory lock, so the lock is held exactly as
                    # long as the connection works: one round trip on it tells.
                    try:
                        connection.execute("SELECT 1").fetchone()
                    except psycopg.Error:
                        return CONNECTION_BROKE
                    return None

                try:
                    yield HeldLock(name, probe)
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
            with self._lend(timeout=timeout) as connection:
                # In autocommit: one round trip (SELECT 1) instead of three (BEGIN, SELECT 1, COMMIT); a
                # readiness probe answering many times a second pays for each.
                connection.autocommit = True
                try:
                    connection.execute("SELECT 1").fetchone()
                finally:
                    if not connection.closed:
                        connection.autocommit = False
        except PoolTimeout as exc:
            raise self._pool_timeout(exc, timeout) from None
        except psycopg.Error as exc:
            raise describe_connect_error(self.target, exc) from None

    def applied_migrations(self, store: str) -> list[str] | None:
        rows = self._bookkeeping_rows(
            sql.SQL("SELECT migration_id FROM {}._yoyo_migration ORDER BY applied_at_utc"), store
        )
        return None if rows is None else [row[0] for row in rows]

    def migration_compatibility(self, store: str) -> dict[str, str]:
        rows = self._bookkeeping_rows(
            sql.SQL("SELECT migration_id, compatibility FROM {}._yoyo_tg_compat"), store
        )
        return {} if rows is None else {row[0]: row[1] for row in rows}

    def _bookkeeping_rows(self, template: sql.SQL, store: str) -> list[tuple[Any, ...]] | None:
        """Rows of a migration bookkeeping table in a store's schema; None when the table (or the schema)
        does not exist yet."""
        with self._lend() as conn:
            try:
                with conn.transaction():
                    return conn.execute(template.format(sql.Identifier(store))).fetchall()
            except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
                return None

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection for db/ plumbing (migrations, locks, the migrator's catalog reads)."""
        with self._lend() as connection:
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
