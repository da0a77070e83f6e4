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
from typing import Any

import psycopg
from psycopg.adapt import Dumper
from psycopg.copy import LibpqWriter
from psycopg.types.string import BytesBinaryDumper

from tg_parser.db.postgres import PgTarget, describe_connect_error


class PgStatementFailed(Exception):
    """A statement or a COPY failed; the message is the server's, on one line."""


class PgLockUnavailable(PgStatementFailed):
    """`LOCK … NOWAIT` found the tables in use by another session."""


# The fields of `copy_rows`, by the value each takes, and the PostgreSQL type whose binary dumper
# writes it (the oids only choose dumpers: binary COPY data carries none, the target column's type
# reads the bytes).
COPY_FIELDS = {
    "int8": "int8",  # int within the type's range (beyond it: OverflowError)
    "int4": "int4",  # int; beyond the type's range it wraps around (the migrator's scan refuses those)
    "int2": "int2",
    "bool": "bool",  # the truth of the value
    "float8": "float8",  # float or int
    "text": "bytea",  # bytes: the stored UTF-8, sent as they are (the server checks the encoding)
    "timestamptz": "int8",  # int: microseconds since 2000-01-01 UTC, timestamptz's binary format
    "jsonb": "jsonb",  # bytes: JSON text, sent after jsonb's format version (see _JsonbText)
}


class _JsonbText(Dumper):
    """jsonb's binary format from JSON text as bytes: version 1, then the text (which the server
    parses as for text COPY)."""

    format = psycopg.pq.Format.BINARY
    oid = psycopg.postgres.types["jsonb"].oid

    def dump(self, obj: bytes) -> bytes:
        return b"\x01" + obj  # bytes only: anything else raises TypeError


class _CountingWriter(LibpqWriter):
    """libpq's COPY writer, counting the bytes it is handed."""

    sent = 0

    def write(self, data: Any) -> None:
        self.sent += len(data)
        super().write(data)


class RowCopy:
    """What `copy_rows` yields: `write_row(values)` sends one row; `sent` is the COPY data handed to
    libpq so far (all of it once the block has ended)."""

    def __init__(self, copy: psycopg.Copy, writer: _CountingWriter) -> None:
        self.write_row = copy.write_row
        self._writer = writer

    @property
    def sent(self) -> int:
        return self._writer.sent


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
    def copy_rows(self, statement: str, fields: Sequence[str]) -> Iterator[RowCopy]:
        """`COPY … FROM STDIN (FORMAT BINARY)`, row by row: psycopg encodes each row (`write_row`) with
        the binary dumpers of `fields` (names of COPY_FIELDS, one per column) and adds the stream's
        header and trailer. A value its dumper cannot take raises (TypeError, OverflowError, …), which
        ends the COPY; the transaction is then failed."""
        try:
            with self.conn.cursor() as cursor:
                # By oid only (for set_types): bytea's binary dumper in C, which copies bytes as they are
                # (psycopg's default for bytea is the DB-API one, in Python); jsonb from its text.
                cursor.adapters.register_dumper(None, BytesBinaryDumper)
                cursor.adapters.register_dumper(None, _JsonbText)
                writer = _CountingWriter(cursor)
                with cursor.copy(statement, writer=writer) as copy:  # type: ignore[arg-type]
                    copy.set_types([COPY_FIELDS[field] for field in fields])
                    yield RowCopy(copy, writer)
        except psycopg.Error as exc:
            raise _failed(exc) from None
