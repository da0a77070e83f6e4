"""Raw PostgreSQL access for bulk tools (the SQLite → PostgreSQL migrator), the only place they touch psycopg.

The application's pool is not used: a bulk load needs one session that holds its transaction from the
first TRUNCATE/COPY to the final COMMIT or ROLLBACK, with no statement timeout (a large COPY may run for
minutes), UTF-8 as client encoding and UTC as time zone. Statements are plain strings built by the
caller (identifiers quoted with `quote()`, values bound as `%s` parameters).

Driver exceptions are translated: connection failures into the application's `DatabaseUnavailable`
(one line, no password), a lock that cannot be had into `PgLockUnavailable`, anything else a statement
raises into `PgStatementFailed`, so callers never import psycopg.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import psycopg

from tg_parser.db.postgres import PgTarget, describe_connect_error


class PgStatementFailed(Exception):
    """A statement or a COPY failed; the message is the server's, on one line."""


class PgLockUnavailable(PgStatementFailed):
    """`LOCK … NOWAIT` found the tables in use by another session."""


class CopyWriter(Protocol):
    def write(self, data: bytes) -> None: ...


def quote(name: str) -> str:
    """A PostgreSQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _failed(exc: psycopg.Error) -> PgStatementFailed:
    text = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return PgLockUnavailable(text)
    return PgStatementFailed(text)


class BulkPostgres:
    def __init__(
        self, target: PgTarget, *, connect_timeout: int = 10, application_name: str = "tg-parser-bulk"
    ) -> None:
        kwargs = target.connect_kwargs()
        kwargs.setdefault("connect_timeout", connect_timeout)
        kwargs["application_name"] = application_name
        kwargs["client_encoding"] = "UTF8"
        startup = "-c TimeZone=UTC -c statement_timeout=0 -c lock_timeout=10000"
        kwargs["options"] = (kwargs.get("options", "") + " " + startup).strip()
        try:
            self.conn = psycopg.connect(**kwargs)
        except psycopg.Error as exc:
            raise describe_connect_error(target, exc) from None

    @property
    def backend_pid(self) -> int:
        return int(self.conn.info.backend_pid)

    @property
    def closed(self) -> bool:
        return bool(self.conn.closed)

    def close(self) -> None:
        self.conn.close()

    def commit(self) -> None:
        try:
            self.conn.commit()
        except psycopg.Error as exc:
            raise _failed(exc) from None

    def rollback(self) -> None:
        if not self.conn.closed:
            self.conn.rollback()

    def execute(self, statement: str, params: Sequence[Any] | None = None) -> None:
        try:
            self.conn.execute(statement, params)  # type: ignore[arg-type]  # a plain, caller-built string
        except psycopg.Error as exc:
            raise _failed(exc) from None

    def all(self, statement: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        try:
            return self.conn.execute(statement, params).fetchall()  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise _failed(exc) from None

    def one(self, statement: str, params: Sequence[Any] | None = None) -> tuple[Any, ...] | None:
        rows = self.all(statement, params)
        return rows[0] if rows else None

    def stream(self, statement: str, params: Sequence[Any] | None = None) -> Iterator[tuple[Any, ...]]:
        try:
            with self.conn.cursor() as cursor:
                cursor.execute(statement, params)  # type: ignore[arg-type]
                yield from cursor
        except psycopg.Error as exc:
            raise _failed(exc) from None

    @contextmanager
    def copy(self, statement: str) -> Iterator[CopyWriter]:
        """`COPY … FROM STDIN`: yields an object whose `write(bytes)` sends data as given (for binary
        COPY the caller writes the signature, the tuples and the trailer itself)."""
        try:
            with self.conn.cursor() as cursor, cursor.copy(statement) as copy:  # type: ignore[arg-type]
                yield copy
        except psycopg.Error as exc:
            raise _failed(exc) from None
