"""tg-parser init: create the data directory (SQLite) and bring every store's schema up to date."""

from __future__ import annotations

import click

from tg_parser.cli.context import AppContext, pass_app
from tg_parser.cli.output import emit_json, json_option
from tg_parser.db import migrations
from tg_parser.db.connect import dialect_of


@click.command("init")
@json_option
@pass_app
def command(app: AppContext, as_json: bool) -> None:
    """Create the stores and apply all migrations (safe to run again).

    \b
    Examples:
      tg-parser init
      DB_TYPE=postgres DATABASE_URL=postgresql://tgp@db/tgp tg-parser init
    """
    settings = app.settings
    applied = migrations.upgrade(settings)
    where = f"SQLite in {settings.db_sqlite_dir}" if dialect_of(settings) == "sqlite" else "PostgreSQL"
    if as_json:
        emit_json({"database": dialect_of(settings), "applied": applied})
        return
    for store, ids in applied.items():
        click.echo(f"{store:<10} {'applied ' + ', '.join(ids) if ids else 'up to date'}")
    click.echo(
        f"Ready: {where}. Next: 'tg-parser health', then 'tg-parser sources add' or 'tg-parser ingest --from-export'."
    )
