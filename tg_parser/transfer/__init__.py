"""The SQLite → PostgreSQL transfer behind `db migrate-to-postgres` (DESIGN.md §8): preflight, COPY load with a concurrent scan, checksums, report.

`run_transfer(TransferOptions(...))` runs a migration, a dry run or a verification and returns a
`TransferReport`; `database_checksums(settings)` gives the checksums of either dialect. The CLI
(`tg-parser db migrate-to-postgres`, `tg-parser db checksum`) and `scripts/migrate_sqlite_to_postgres.py`
are thin wrappers around these two functions.

Names are imported lazily, so the scan's helper processes (`tg_parser.transfer.worker`) load only
what they use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TransferOptions", "TransferReport", "database_checksums", "run_transfer"]


def __getattr__(name: str) -> Any:
    if name == "TransferReport":
        from tg_parser.transfer.report import TransferReport

        return TransferReport
    if name in ("TransferOptions", "database_checksums", "run_transfer"):
        from tg_parser.transfer import runner

        return getattr(runner, name)
    raise AttributeError(name)
