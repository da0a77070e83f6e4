"""tg-parser db migrate-to-postgres / db checksum (the bulk migrator, DESIGN.md §8)."""

from __future__ import annotations

import click


@click.command("migrate-to-postgres")
def migrate_to_postgres() -> None:
    """Copy a SQLite install into PostgreSQL with COPY and verify it with checksums."""
    raise click.ClickException("the bulk migrator is not available yet")


@click.command("checksum")
def checksum() -> None:
    """Print per-table row counts and checksums of the configured database."""
    raise click.ClickException("checksums are not available yet")
