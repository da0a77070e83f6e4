"""tg-parser health: is every store reachable and its schema current? Exit 1 if not."""

from __future__ import annotations

import click

from tg_parser.cli.context import AppContext, pass_app
from tg_parser.cli.output import emit_json, json_option
from tg_parser.health import collect_health


@click.command("health")
@json_option
@pass_app
def command(app: AppContext, as_json: bool) -> None:
    """Check that each store is reachable and its migrations are current (exit 1 if not).

    \b
    Examples:
      tg-parser health
      tg-parser health --json
    """
    report = collect_health(app.settings, lambda: app.database(check_migrations=False))
    if as_json:
        emit_json(report)
    else:
        click.echo(f"tg-parser {report['version']} on {report.get('where', report['database'])}")
        if "error" in report:
            click.echo(f"  database: FAIL  {report['error']}")
        for store, entry in report["stores"].items():
            state = "ok" if entry["ok"] else "FAIL"
            detail = entry.get("error") or (
                f"{len(entry['pending'])} migration(s) pending — run 'tg-parser db upgrade'"
                if entry.get("pending")
                else f"schema {entry.get('current')}"
            )
            click.echo(f"  {store:<10} {state:<4}  {detail}")
        if "pool" in report:
            pool = report["pool"]
            click.echo(
                f"  pool       size {pool['pool_size']} (min {pool['pool_min']}, max {pool['pool_max']}), "
                f"available {pool['pool_available']}, waiting {pool['requests_waiting']}"
            )
        click.echo("healthy" if report["ok"] else "unhealthy")
    if not report["ok"]:
        click.get_current_context().exit(1)
