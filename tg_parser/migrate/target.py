"""The PostgreSQL side: one dedicated connection, one transaction for the whole load.

The application's pool is not used: the migrator needs a single session that holds its transaction from
the first TRUNCATE/COPY to the final COMMIT or ROLLBACK, with no statement timeout (a large COPY may
legitimately run for minutes) and UTF-8 as client encoding.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg

from tg_parser.db.postgres import PgTarget, describe_connect_error
from tg_parser.migrate import catalog
from tg_parser.migrate.canonical import combine_pg_sums
from tg_parser.migrate.catalog import KeyRange
from tg_parser.migrate.errors import MigrationError
from tg_parser.migrate.schema import Table


class PostgresTarget:
    def __init__(
        self, target: PgTarget, *, connect_timeout: int = 10, application_name: str = "tg-parser-migrate"
    ) -> None:
        self.target = target
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

    def describe(self) -> str:
        return self.target.describe()

    def close(self) -> None:
        self.conn.close()

    @property
    def backend_pid(self) -> int:
        return int(self.conn.info.backend_pid)

    # --- catalog ---------------------------------------------------------------------------------

    def server_encoding(self) -> str:
        return catalog.pg_server_encoding(self.conn)

    def migration_ids(self, store: str) -> list[str] | None:
        return catalog.pg_migration_ids(self.conn, store)

    def tables(self, store: str) -> list[str]:
        return catalog.pg_tables(self.conn, store)

    def columns(self, store: str, table: str) -> list[tuple[str, str, bool, bool]]:
        return catalog.pg_columns(self.conn, store, table)

    def primary_key(self, store: str, table: str) -> list[str]:
        return catalog.pg_primary_key(self.conn, store, table)

    def parents(self, store: str, table: str) -> list[str]:
        return catalog.pg_parents(self.conn, store, table)

    def secondary_indexes(self, store: str, table: str) -> list[tuple[str, str]]:
        return catalog.pg_secondary_indexes(self.conn, store, table)

    def has_rows(self, table: Table) -> bool:
        return catalog.pg_has_rows(self.conn, table)

    # --- load ------------------------------------------------------------------------------------

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        if not self.conn.closed:
            self.conn.rollback()

    def lock(self, tables: list[Table]) -> None:
        try:
            catalog.pg_lock(self.conn, tables)
        except psycopg.errors.LockNotAvailable:
            raise MigrationError(
                "another session is writing the target tables",
                "stop the application (workers, API, cron) pointed at the target database, then run again",
            ) from None

    def truncate(self, tables: list[Table]) -> None:
        catalog.pg_truncate(self.conn, tables)

    def drop_indexes(self, tables: list[Table]) -> list[str]:
        """Drop secondary indexes (not those of constraints); returns their DDL to recreate them."""
        dropped = []
        for table in tables:
            for name, ddl in table.pg_indexes:
                catalog.pg_drop_index(self.conn, table.store, name)
                dropped.append(ddl)
        return dropped

    def create_indexes(self, ddls: list[str]) -> None:
        for ddl in ddls:
            catalog.pg_create_index(self.conn, ddl)

    def restart_identities(self, tables: list[Table]) -> None:
        for table in tables:
            for column in table.identity:
                catalog.pg_restart_identity(self.conn, table, column)

    def analyze(self, tables: list[Table]) -> None:
        for table in tables:
            catalog.pg_analyze(self.conn, table)

    def snapshot(self) -> None:
        """Read everything that follows from one consistent snapshot (db checksum)."""
        self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")

    def copy(self, table: Table, *, binary: bool = False) -> Any:
        """A psycopg Copy context for the table's columns (text format unless `binary`)."""
        cursor = self.conn.cursor()
        return cursor.copy(catalog.pg_copy_sql(table, binary=binary))

    # --- checksums -------------------------------------------------------------------------------

    def checksum(self, table: Table, bounds: KeyRange | None = None) -> tuple[int, int]:
        """(rows, checksum) computed by the server from the stored values."""
        statement, params = catalog.pg_checksum_sql(table, bounds)
        row = self.conn.execute(statement, params).fetchone()
        assert row is not None
        return int(row[0]), combine_pg_sums(row[1], row[2], row[3])

    def count(self, table: Table, bounds: KeyRange | None = None) -> int:
        statement, params = catalog.pg_count_sql(table, bounds)
        row = self.conn.execute(statement, params).fetchone()
        return int(row[0]) if row else 0

    def row_hashes(self, table: Table, bounds: KeyRange | None) -> Iterator[tuple[tuple[Any, ...], int]]:
        statement, params = catalog.pg_row_hashes_sql(table, bounds)
        width = len(table.key)
        with self.conn.cursor() as cursor:
            cursor.execute(statement, params)
            for row in cursor:
                yield tuple(row[:width]), int(row[width], 16)

    def boundaries(self, table: Table, bounds: KeyRange | None, step: int) -> list[tuple[Any, ...]]:
        statement, params = catalog.pg_boundaries_sql(table, bounds)
        return [tuple(row) for row in self.conn.execute(statement, [*params, step]).fetchall()]
