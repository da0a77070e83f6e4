"""tg-parser health: is every store reachable and its schema current? Exit 1 if not."""

from __future__ import annotations

from typing import Any

import click

from tg_parser import __version__
from tg_parser.cli.context import AppContext, pass_app
from tg_parser.cli.output import emit_json, json_option
from tg_parser.db import migrations
from tg_parser.db.connect import dialect_of
from tg_parser.db.resources import STORES
from tg_parser.errors import TgParserError


def collect_health(app: AppContext) -> dict[str, Any]:
    settings = app.settings
    report: dict[str, Any] = {
        "ok": False,
        "version": __version__,
        "database": dialect_of(settings),
        "stores": {},
    }
    try:
        if dialect_of(settings) == "sqlite":
            migrations.require_sqlite_files(settings.db_sqlite_dir)
        db = app.database(check_migrations=False)
    except TgParserError as exc:
        report["error"] = exc.one_line()
        return report
    report["where"] = db.describe()
    ok = True
    for store in STORES:
        entry: dict[str, Any] = {}
        try:
            applied = migrations.applied_ids(db, store) or []
            expected = migrations.expected_ids(db.dialect, store)
            entry["current"] = applied[-1] if applied else None
            entry["pending"] = [m for m in expected if m not in applied]
            if not entry["pending"]:
                # With migrations pending the tables may not exist yet: the pending list is the finding.
                db.fetch_one(f"health_{store}")
            entry["reachable"] = True
        except Exception as exc:  # report every store, whatever failed
            entry["reachable"] = False
            entry["error"] = (
                f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            )
        entry["ok"] = bool(entry.get("reachable")) and not entry.get("pending")
        ok = ok and entry["ok"]
        report["stores"][store] = entry
    report["pool" if db.dialect == "postgres" else "files"] = (
        db.stats() if db.dialect == "postgres" else db.stats()["files"]
    )
    report["ok"] = ok
    return report


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
    report = collect_health(app)
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
