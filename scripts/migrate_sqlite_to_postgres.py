#!/usr/bin/env python3
"""Operator script: migrate a SQLite install into PostgreSQL (same code as `tg-parser db migrate-to-postgres`).

    python3 scripts/migrate_sqlite_to_postgres.py --dry-run --verify [--from-sqlite DIR] [--to DSN] ...

Every option of `tg-parser db migrate-to-postgres` is accepted and passed on unchanged. `--verify` asks
for the checksum verification, which every load performs anyway (so it is accepted and implied); use
`--verify-only` to compare an already migrated target with the source without loading anything.
Exit status: 0 when every table matches, non-zero otherwise (see the migration guide).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from tg_parser.cli.main import cli

    args = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--verify"]
    try:
        cli.main(["db", "migrate-to-postgres", *args], prog_name="migrate_sqlite_to_postgres.py")
    except SystemExit as exc:  # click exits with the command's status
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
