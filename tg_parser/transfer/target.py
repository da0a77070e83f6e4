"""The PostgreSQL side: one dedicated session, one transaction for the whole load.

The connection is `tg_parser.db.bulk_postgres.BulkPostgres` (no pool, no statement timeout, UTF-8, UTC;
see there). This class adds what the migrator asks of it, in terms of tables and key ranges.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from tg_parser.db.bulk_postgres import BulkPostgres, PgLockUnavailable, PgStatementFailed, RowCopy
from tg_parser.db.postgres import PgTarget
from tg_parser.transfer import introspect
from tg_parser.transfer.canonical import combine_pg_sums
from tg_parser.transfer.errors import MigrationError
from tg_parser.transfer.introspect import KeyRange
from tg_parser.transfer.schema import Table


class PostgresTarget:
    def __init__(
        self, target: PgTarget, *, connect_timeout: int = 10, application_name: str = "tg-parser-migrate"
    ) -> None:
        self.target = target
        self.db = BulkPostgres(target, connect_timeout=connect_timeout, application_name=application_name)

    def describe(self) -> str:
        return self.target.describe()

    def close(self) -> None:
        self.db.close()

    @property
    def backend_pid(self) -> int:
        return self.db.backend_pid

    # --- introspection (system catalogs) ---------------------------------------------------------------------------------

    def server_encoding(self) -> str:
        row = self.db.one(introspect.PG_SERVER_ENCODING)
        return str(row[0]) if row else ""

    def migration_ids(self, store: str) -> list[str] | None:
        row = self.db.one(introspect.PG_HAS_MIGRATIONS, (store,))
        if not row or not row[0]:
            return None
        return [r[0] for r in self.db.all(introspect.pg_migration_ids_sql(store))]

    def tables(self, store: str) -> list[str]:
        return [
            r[0] for r in self.db.all(introspect.PG_TABLES, (store,)) if r[0] not in introspect.YOYO_TABLES
        ]

    def initialised(self, store: str) -> bool:
        """Whether the store's schema holds migration bookkeeping (`tg-parser init` ran for it)."""
        return any(r[0] == "_yoyo_migration" for r in self.db.all(introspect.PG_TABLES, (store,)))

    def columns(self, store: str, table: str) -> list[tuple[str, str, bool, bool]]:
        """(name, data type, not null, fed by a sequence) per column, in table order."""
        return [
            (r[0], r[1], bool(r[2]), bool(r[3])) for r in self.db.all(introspect.PG_COLUMNS, (store, table))
        ]

    def primary_key(self, store: str, table: str) -> list[str]:
        return [r[0] for r in self.db.all(introspect.PG_PRIMARY_KEY, (store, table))]

    def parents(self, store: str, table: str) -> list[str]:
        return [r[0] for r in self.db.all(introspect.PG_PARENTS, (store, table))]

    def has_rows(self, table: Table) -> bool:
        row = self.db.one(introspect.pg_has_rows_sql(table))
        return bool(row and row[0])

    def has_lz4(self) -> bool:
        row = self.db.one(introspect.PG_HAS_LZ4)
        return bool(row and row[0])

    # --- load ------------------------------------------------------------------------------------

    def commit(self) -> None:
        self.db.commit()

    def rollback(self) -> None:
        self.db.rollback()

    def lock(self, tables: list[Table]) -> None:
        try:
            self.db.execute(introspect.pg_lock_sql(tables))
        except PgLockUnavailable:
            raise MigrationError(
                "another session is writing the target tables",
                "stop the application (workers, API, cron) pointed at the target database, then run again",
            ) from None

    def truncate(self, tables: list[Table]) -> None:
        self.db.execute(introspect.pg_truncate_sql(tables))

    def compress_with_lz4(self) -> None:
        """Compress large values with LZ4 rather than pglz for the rest of this transaction."""
        self.db.execute("SET LOCAL default_toast_compression = lz4")

    def restart_identities(self, tables: list[Table]) -> None:
        """Make each identity column's sequence continue after the largest loaded value (1 for an
        empty table)."""
        for table in tables:
            for column in table.identity:
                row = self.db.one(introspect.pg_max_sql(table, column))
                top = row[0] if row else None
                seq = self.db.one(introspect.PG_SEQUENCE_OF, (table.store, table.name, column))
                if seq is not None:
                    start = int(top) + 1 if top is not None else 1
                    self.db.execute(introspect.pg_restart_sql(seq[0], seq[1], start))

    def analyze(self, tables: list[Table]) -> None:
        for table in tables:
            self.db.execute(introspect.pg_analyze_sql(table))

    def snapshot(self) -> None:
        """Read everything that follows from one consistent snapshot (db checksum)."""
        self.db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")

    def copy_rows(self, table: Table, fields: list[str]) -> AbstractContextManager[RowCopy]:
        """Binary COPY into the table's columns, row by row (`fields`: see `bulk_postgres.COPY_FIELDS`)."""
        return self.db.copy_rows(introspect.pg_copy_sql(table), fields)

    # --- checksums -------------------------------------------------------------------------------

    def checksum(self, table: Table, bounds: KeyRange | None = None) -> tuple[int, int]:
        """(rows, checksum) computed by the server from the stored values."""
        statement, params = introspect.pg_checksum_sql(table, bounds)
        row = self.db.one(statement, params or None)
        if row is None:
            raise MigrationError(f"no checksum returned for {table.qualified}", "report this as a bug")
        return int(row[0]), combine_pg_sums(row[1], row[2], row[3])

    def count(self, table: Table, bounds: KeyRange | None = None) -> int:
        statement, params = introspect.pg_count_sql(table, bounds)
        row = self.db.one(statement, params or None)
        return int(row[0]) if row else 0

    def row_hashes(self, table: Table, bounds: KeyRange | None) -> Iterator[tuple[tuple[Any, ...], int]]:
        statement, params = introspect.pg_row_hashes_sql(table, bounds)
        width = len(table.key)
        for row in self.db.stream(statement, params or None):
            yield tuple(row[:width]), int(row[width], 16)

    def boundaries(self, table: Table, bounds: KeyRange | None, step: int) -> list[tuple[Any, ...]]:
        statement, params = introspect.pg_boundaries_sql(table, bounds)
        return [tuple(row) for row in self.db.all(statement, [*params, step])]


__all__ = ["PgStatementFailed", "PostgresTarget"]
