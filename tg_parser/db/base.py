"""The executor surface shared by both dialects.

A `Database` runs named queries from the catalog. Outside a transaction each call is its own
transaction; inside `with db.transaction():` every call made by this thread (through any store that
shares the database) joins that one transaction, and an exception rolls all of it back.
"""

from __future__ import annotations

import contextvars
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Literal, overload

from tg_parser.db.catalog import Query, SqlCatalog
from tg_parser.db.locks import HeldLock

Row = dict[str, Any]
Params = Mapping[str, Any] | None


class Session(ABC):
    """One connection, in or out of a transaction. Dialects implement the primitive operations."""

    @abstractmethod
    def execute(self, query: Query, params: Params = None) -> int: ...

    @abstractmethod
    def fetch_all(self, query: Query, params: Params = None) -> list[Row]: ...

    @abstractmethod
    def fetch_one(self, query: Query, params: Params = None) -> Row | None: ...

    @abstractmethod
    def fetch_tuples(self, query: Query, params: Params = None) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    def execute_many(self, query: Query, rows: Sequence[Mapping[str, Any]]) -> int: ...

    @abstractmethod
    def execute_many_tuples(self, query: Query, rows: Sequence[tuple[Any, ...]]) -> int: ...

    @abstractmethod
    def stream(self, query: Query, params: Params, batch_size: int) -> Iterator[Row]: ...

    @abstractmethod
    def stream_batches(
        self, query: Query, params: Params, batch_size: int
    ) -> Iterator[list[tuple[Any, ...]]]: ...

    @abstractmethod
    def explain(self, query: Query, params: Params = None) -> list[str]: ...


class Database(ABC):
    """Named-query executor over one dialect. Stores hold one and never see the driver."""

    dialect: str
    catalog: SqlCatalog
    # What stores ask instead of the dialect (DESIGN.md: dialect differences live in db/ and sql/).
    # Whether statements that read rows out of a JSON parameter cast its timestamps to a timestamp type
    # (PostgreSQL's jsonb_to_recordset(... timestamptz)), so any ISO 8601 text with an offset stores the
    # same instant; where False (SQLite) the text is stored as sent and must be the canonical form.
    json_timestamps_cast: bool = False
    # Whether a reader thread may fetch the next keyset batch while the caller works on this one: on
    # SQLite a batch is an in-process read that releases the GIL; on PostgreSQL each batch is a server
    # transaction, which would stay open while the reader thread waits for the GIL.
    reads_ahead: bool = False
    # Whether a batch of rows is inserted by one statement reading a JSON array parameter (PostgreSQL:
    # a statement per row costs the server, and the client adapting each, far more than parsing one
    # array) rather than by a prepared statement bound per row (SQLite: binding in-process is cheaper
    # than its JSON functions).
    inserts_json_batches: bool = False
    # Whether one transaction spans the stores atomically (PostgreSQL: schemas of one database). On
    # SQLite each store is an attached file, and a transaction over attached WAL files is not atomic as
    # a set: callers order their commits instead (rows before the cursor or queue that points at them).
    atomic_across_stores: bool = False
    # Whether reading a queued message's pages ahead, from other sessions while the claim runs, overlaps
    # reads the claim would do one at a time (PostgreSQL: each session reads a B-tree leaf only when its
    # descent reaches it); on SQLite one process reads its files and there is nothing to overlap.
    reads_ahead_in_sessions: bool = False
    # Whether text columns may hold a NUL character (SQLite); PostgreSQL's text cannot, so input that
    # carries one is refused up front rather than failing halfway through a write.
    text_holds_nul: bool = True

    def __init__(self) -> None:
        self._tx: contextvars.ContextVar[Session | None] = contextvars.ContextVar(
            f"tx-{id(self)}", default=None
        )

    # --- dialect hooks ------------------------------------------------------------------------------

    @abstractmethod
    def _session(self) -> AbstractContextManager[Session]:
        """A session outside any transaction (each statement commits on its own)."""

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Session]:
        """A session inside a new transaction: commit on success, rollback on exception."""

    def _stream_session(self) -> AbstractContextManager[Session]:
        """Where a stream outside a transaction runs (PostgreSQL needs a transaction for its cursor)."""
        return self._transaction()

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def describe(self) -> str:
        """Where this database is, with no secret in it (for messages and health)."""

    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """Pool or connection statistics for health checks."""

    @abstractmethod
    def hold_lock(self, name: str) -> AbstractContextManager[HeldLock]:
        """Hold the named lock for the block across processes, or raise `db.locks.LockBusy` at once. The
        block gets a `HeldLock` whose `check()` raises `db.locks.LockLost` once the lock is lost."""

    def long_statements(self) -> AbstractContextManager[None]:
        """Lift the statement timeout for the transactions this thread opens in the block: for work that
        legitimately runs long (a bulk load, an index build, a batched prune). A no-op where there is
        no statement timeout (SQLite)."""
        return nullcontext()

    @abstractmethod
    def ping(self, timeout: float) -> None:
        """Run a trivial query within `timeout` seconds (waiting for a connection included), or raise
        `DatabaseUnavailable`: the readiness check, which must answer quickly when the server is gone."""

    @abstractmethod
    def applied_migrations(self, store: str) -> list[str] | None:
        """Migration ids applied to a store, in the order applied; None if it was never migrated."""

    @abstractmethod
    def migration_compatibility(self, store: str) -> dict[str, str]:
        """Migration id → the compatibility recorded when it was applied (`additive`/`breaking`); empty when
        nothing was recorded (a database last migrated by a version that did not record it)."""

    # --- public surface -----------------------------------------------------------------------------

    def query(self, name: str) -> Query:
        return self.catalog.get(name)

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """Run the block in one transaction; nested calls join the outer one."""
        if self._tx.get() is not None:
            yield self
            return
        with self._transaction() as session:
            token = self._tx.set(session)
            try:
                yield self
            finally:
                self._tx.reset(token)

    @property
    def in_transaction(self) -> bool:
        return self._tx.get() is not None

    @contextmanager
    def _use(self) -> Iterator[Session]:
        active = self._tx.get()
        if active is not None:
            yield active
        else:
            with self._session() as session:
                yield session

    @contextmanager
    def _stream_use(self) -> Iterator[Session]:
        # Inside a transaction, its session; otherwise one held for the stream (see `stream`).
        active = self._tx.get()
        if active is not None:
            yield active
        else:
            with self._stream_session() as session:
                yield session

    def execute(self, name: str, params: Params = None) -> int:
        """Run a statement; returns the affected row count."""
        query = self.query(name)
        with self._use() as session:
            return session.execute(query, params)

    def fetch_all(self, name: str, params: Params = None) -> list[Row]:
        query = self.query(name)
        with self._use() as session:
            return session.fetch_all(query, params)

    def fetch_one(self, name: str, params: Params = None) -> Row | None:
        query = self.query(name)
        with self._use() as session:
            return session.fetch_one(query, params)

    def fetch_scalar(self, name: str, params: Params = None) -> Any:
        row = self.fetch_one(name, params)
        return None if row is None else next(iter(row.values()), None)

    def execute_many(self, name: str, rows: Iterable[Mapping[str, Any]], batch_size: int = 500) -> int:
        """Run a statement once per parameter set, sent in batches; all batches in one transaction."""
        query = self.query(name)
        total = 0
        with self.transaction():
            session = self._tx.get()
            assert session is not None
            batch: list[Mapping[str, Any]] = []
            for row in rows:
                batch.append(row)
                if len(batch) >= batch_size:
                    total += session.execute_many(query, batch)
                    batch = []
            if batch:
                total += session.execute_many(query, batch)
        return total

    def execute_many_tuples(self, name: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> int:
        """Run a statement once per row, each row a plain tuple in the order `columns` names; one
        transaction (the caller's, if any). The bulk writers' form: no dict per row, and on SQLite no
        conversion either, so the values must be what the driver stores as they are (str, int, float,
        bytes, None; timestamps as canonical text, JSON as serialised text). `columns` must be the
        statement's parameters in order of first appearance (checked once per call)."""
        query = self.query(name)
        expected = query.numbered[1]
        if tuple(columns) != expected:
            raise ValueError(f"{name} takes the columns {expected}, not {tuple(columns)}")
        with self.transaction():
            session = self._tx.get()
            assert session is not None
            return session.execute_many_tuples(query, rows)

    @overload
    def keyset_batches(
        self,
        name: str,
        params: Params,
        *,
        start: Mapping[str, Any],
        after: Callable[[Row], Mapping[str, Any]],
        batch_size: int = 1000,
        tuples: Literal[False] = False,
    ) -> Iterator[list[Row]]: ...

    @overload
    def keyset_batches(
        self,
        name: str,
        params: Params,
        *,
        start: Mapping[str, Any],
        after: Callable[[tuple[Any, ...]], Mapping[str, Any]],
        batch_size: int = 1000,
        tuples: Literal[True],
    ) -> Iterator[list[tuple[Any, ...]]]: ...

    def keyset_batches(
        self,
        name: str,
        params: Params,
        *,
        start: Mapping[str, Any],
        after: Callable[[Any], Mapping[str, Any]],
        batch_size: int = 1000,
        tuples: bool = False,
    ) -> Iterator[list[Any]]:
        """Read a long result a batch at a time, each batch one short statement (keyset paging).

        The query takes the keyset parameters and `:batch_size` (its LIMIT) and orders by the keyset
        columns; `start` gives the keyset parameters of the first batch (a key below every row) and
        `after(last_row)` those of the next. Outside a transaction each batch is fetched whole in its own
        transaction, which is closed (and its connection handed back) before the batch is yielded: the
        caller's work between batches (an LLM call, a slow writer) never holds a transaction, a snapshot
        or a cursor open. Inside a transaction the batches join it (and see its writes).

        The batches are not one snapshot: a row committed meanwhile shows up if its key is ahead of the
        last one read, a row deleted meanwhile is skipped, and no row is read twice.
        """
        query = self.query(name)
        keys = dict(start)
        while True:
            values = {**(params or {}), **keys, "batch_size": batch_size}
            with self._use() as session:
                rows = session.fetch_tuples(query, values) if tuples else session.fetch_all(query, values)
            if rows:
                yield rows
            if len(rows) < batch_size:
                return
            following = dict(after(rows[-1]))
            if following == keys:  # a key that does not round-trip would read the same batch forever
                raise RuntimeError(f"{name}: keyset paging made no progress after {following!r}")
            keys = following

    def stream(self, name: str, params: Params = None, batch_size: int = 1000) -> Iterator[Row]:
        """Yield rows one by one with bounded memory (a server-side cursor on PostgreSQL).

        The connection is held until the iterator is exhausted or closed; use it in a `for` loop or
        `contextlib.closing`. On PostgreSQL the cursor lives in a transaction held for the whole
        iteration, so the caller must not do slow work (a network call, a slow write) between rows:
        stores read long results with `keyset_batches` instead (tests/test_architecture.py checks).
        """
        query = self.query(name)
        with self._stream_use() as session:
            yield from session.stream(query, params, batch_size)

    def stream_batches(
        self, name: str, params: Params = None, batch_size: int = 2000
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Like `stream`, but plain tuples in the query's column order, a list of them at a time.

        For bulk readers that format every column of every row themselves (the export), where a dict
        and a generator step per row are a measurable share of the work. Same connection rules as
        `stream`.
        """
        query = self.query(name)
        with self._stream_use() as session:
            yield from session.stream_batches(query, params, batch_size)

    def explain(self, name: str, params: Params = None) -> list[str]:
        query = self.query(name)
        with self._use() as session:
            return session.explain(query, params)

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
