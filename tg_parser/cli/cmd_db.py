"""tg-parser db …: schema migrations per store (yoyo) and database maintenance."""

from __future__ import annotations

import click

from tg_parser.cli.context import AppContext, pass_app
from tg_parser.cli.output import emit_json, emit_table, json_option
from tg_parser.db import migrations
from tg_parser.db.resources import STORES

store_option = click.option(
    "--store",
    "stores",
    multiple=True,
    type=click.Choice(STORES),
    help="Only this store (repeatable). Default: all.",
)


@click.group("db")
def command() -> None:
    """Database schema: upgrade, status, rollback, unlock; migrate SQLite to PostgreSQL, checksums.

    \b
    Examples:
      tg-parser db status
      tg-parser db upgrade
      tg-parser db migrate-to-postgres --dry-run
    """


@command.command("upgrade")
@store_option
@json_option
@pass_app
def upgrade(app: AppContext, stores: tuple[str, ...], as_json: bool) -> None:
    """Apply pending migrations.

    \b
    Examples:
      tg-parser db upgrade
      tg-parser db upgrade --store raw --json
    """
    applied = migrations.upgrade(app.settings, stores or STORES)
    if as_json:
        emit_json(applied)
        return
    for store, ids in applied.items():
        click.echo(f"{store:<10} {'applied ' + ', '.join(ids) if ids else 'up to date'}")


@command.command("status")
@store_option
@json_option
@pass_app
def status(app: AppContext, stores: tuple[str, ...], as_json: bool) -> None:
    """Show applied and pending migrations per store (exit 1 when any are pending).

    \b
    Examples:
      tg-parser db status
      tg-parser db status --json
    """
    result = migrations.status(app.settings, stores or STORES)
    if as_json:
        emit_json([s.as_dict() for s in result])
    else:
        rows = [
            {
                "store": s.store,
                "current": s.current or "(none)",
                "pending": ", ".join(s.pending) or "-",
                "lock": (f"pid {s.lock['pid']}" + (" (stale)" if s.lock["stale"] else "")) if s.lock else "-",
            }
            for s in result
        ]
        emit_table(rows, ["store", "current", "pending", "lock"])
    if any(s.pending for s in result):
        click.get_current_context().exit(1)


@command.command("rollback")
@click.option("--store", required=True, type=click.Choice(STORES), help="The store to roll back.")
@click.option(
    "--steps", default=1, show_default=True, type=click.IntRange(min=1), help="How many migrations."
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def rollback(app: AppContext, store: str, steps: int, yes: bool) -> None:
    """Roll back the latest migration(s) of one store. This drops data.

    \b
    Example:
      tg-parser db rollback --store processing --steps 1
    """
    if not yes:
        click.confirm(
            f"Roll back {steps} migration(s) of store {store!r}? Tables they created are dropped", abort=True
        )
    done = migrations.rollback(app.settings, store, steps)
    click.echo(f"{store}: rolled back {', '.join(done) if done else 'nothing (no migration applied)'}")


@command.command("unlock")
@click.option("--store", required=True, type=click.Choice(STORES), help="The store whose lock to remove.")
@pass_app
def unlock(app: AppContext, store: str) -> None:
    """Remove a stale migration lock left by a process that died mid-upgrade.

    \b
    Example (after 'tg-parser db status' showed a stale lock):
      tg-parser db unlock --store ingestion
    """
    lock = migrations.unlock(app.settings, store)
    click.echo(f"{store}: removed lock of pid {lock['pid']}" if lock else f"{store}: no lock was held")


# The bulk migrator's commands live in their own module; they belong to this group.
from tg_parser.cli.db_transfer import checksum, migrate_to_postgres  # noqa: E402

command.add_command(migrate_to_postgres)
command.add_command(checksum)
