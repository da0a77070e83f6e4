"""The bulk migrator SQLite → PostgreSQL (DESIGN.md §8): preflight, COPY load with a concurrent scan, checksums, report.

`migrate(MigrateOptions(...))` runs a migration, a dry run or a verification and returns a
`MigrationReport`; `database_checksums(settings)` gives the checksums of either dialect. The CLI
(`tg-parser db migrate-to-postgres`, `tg-parser db checksum`) and `scripts/migrate_sqlite_to_postgres.py`
are thin wrappers around these two functions.

Names are imported lazily, so the scan's helper processes (`tg_parser.migrate.worker`) load only
what they use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MigrateOptions", "MigrationReport", "database_checksums", "migrate"]


def __getattr__(name: str) -> Any:
    if name == "MigrationReport":
        from tg_parser.migrate.report import MigrationReport

        return MigrationReport
    if name in ("MigrateOptions", "database_checksums", "migrate"):
        from tg_parser.migrate import runner

        return getattr(runner, name)
    raise AttributeError(name)
