"""tg-parser db …: schema migrations per store (yoyo) and database maintenance."""

from __future__ import annotations

from typing import Any

import click

from tg_parser.cli.context import AppContext, pass_app
from tg_parser.cli.output import emit_json, emit_table, json_option
from tg_parser.config.settings import MAX_COUNT, MAX_DAYS
from tg_parser.db import migrations
from tg_parser.db.resources import STORES
from tg_parser.retention import KINDS, RetentionPolicy, prune, record_prune

store_option = click.option(
    "--store",
    "stores",
    multiple=True,
    type=click.Choice(STORES),
    help="Only this store (repeatable). Default: all.",
)


@click.group("db")
def command() -> None:
    """Database schema: upgrade, status, rollback, unlock; retention (prune); orphan checks; migrate SQLite to PostgreSQL.

    \b
    Examples:
      tg-parser db status
      tg-parser db upgrade
      tg-parser db prune --dry-run
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
    """Show applied and pending migrations per store, the migration lock, and migrations applied by a newer
    tg-parser with their compatibility (exit 1 when any are pending or an invalid index is left).

    Reads only: a store never created (no file, no schema) shows as "(not created)" with every migration
    pending, and is not created; 'tg-parser init' creates it.

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
                "current": s.current or ("(none)" if s.created else "(not created)"),
                "pending": ", ".join(s.pending) or "-",
                "lock": (f"pid {s.lock['pid']}" + (" (stale)" if s.lock["stale"] else "")) if s.lock else "-",
            }
            for s in result
        ]
        emit_table(rows, ["store", "current", "pending", "lock"])
        for s in result:
            if s.lock:
                click.echo(
                    f"{s.store}: locked by pid {s.lock['pid']} on {s.lock.get('host') or '?'}: {s.lock['reason']}"
                )
            for mid, compat in s.unknown_compatibility.items():
                click.echo(f"{s.store}: {mid} was applied by a newer tg-parser ({compat})")
            for name in s.invalid_indexes:
                click.echo(
                    f"{s.store}: invalid index {name} (a failed CREATE INDEX CONCURRENTLY): "
                    f"run 'DROP INDEX CONCURRENTLY {name}', then 'tg-parser db upgrade'"
                )
    if any(s.pending or s.invalid_indexes for s in result):
        click.get_current_context().exit(1)


@command.command("rollback")
@click.option("--store", required=True, type=click.Choice(STORES), help="The store to roll back.")
@click.option(
    "--steps", default=1, show_default=True, type=click.IntRange(1, 1000), help="How many migrations."
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
        # Name what would go (latest first; fewer than --steps when fewer are applied), not a count.
        todo = migrations.rollback_plan(app.settings, store, steps)
        if not todo:
            click.echo(f"{store}: rolled back nothing (no migration applied)")
            return
        click.confirm(
            f"Roll back {', '.join(todo)} of store {store!r}? Tables they created are dropped", abort=True
        )
    done = migrations.rollback(app.settings, store, steps)
    click.echo(f"{store}: rolled back {', '.join(done) if done else 'nothing (no migration applied)'}")


@command.command("unlock")
@click.option("--store", required=True, type=click.Choice(STORES), help="The store whose lock to remove.")
@click.option(
    "--force",
    is_flag=True,
    help="Also remove a lock that is not stale (only when you know its process is gone).",
)
@pass_app
def unlock(app: AppContext, store: str, force: bool) -> None:
    """Remove a stale migration lock left by a process that died mid-upgrade.

    A lock that is not stale (its migration may still run, on this host or another) is refused without
    --force (exit 4).

    \b
    Example (after 'tg-parser db status' showed a stale lock):
      tg-parser db unlock --store ingestion
    """
    lock = migrations.unlock(app.settings, store, force=force)
    click.echo(f"{store}: removed lock of pid {lock['pid']}" if lock else f"{store}: no lock was held")


@command.command("check-orphans")
@click.option(
    "--batch",
    default=5000,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="Rows read per statement (each page is its own short statement).",
)
@json_option
@pass_app
def check_orphans(app: AppContext, batch: int, as_json: bool) -> None:
    """Find rows that reference a missing row in another store (exit 1 when an error-level check finds any).

    References between stores are not foreign keys; this reads each referencing table once, in keyset
    pages. Checks marked "info" report rows kept on purpose (the messages of a removed source).

    \b
    Examples:
      tg-parser db check-orphans
      tg-parser db check-orphans --json --batch 20000
    """
    from tg_parser.stores.orphans import OrphanStore

    results = OrphanStore(app.database()).check_all(batch=batch)
    if as_json:
        emit_json([r.as_dict() for r in results])
    else:
        rows = [
            {
                "check": r.check,
                "severity": r.severity,
                "scanned": r.scanned,
                "orphans": r.orphans,
                "example": "-" if r.example is None else r.example,
            }
            for r in results
        ]
        emit_table(rows, ["check", "severity", "scanned", "orphans", "example"])
        for r in results:
            if r.orphans:
                click.echo(f"{r.check}: {r.orphans} {r.describes}; fix: {r.fix}")
    if any(r.orphans and r.severity == "error" for r in results):
        click.get_current_context().exit(1)


def _days_option(name: str, setting: str, what: str) -> Any:
    return click.option(
        f"--{name}",
        type=click.IntRange(0, MAX_DAYS),
        metavar="DAYS",
        help=f"Delete {what} older than DAYS (0 keeps them all). Default: {setting}.",
    )


@command.command("prune")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; change nothing.")
@click.option(
    "--only",
    "kinds",
    multiple=True,
    type=click.Choice(KINDS),
    help="Only this kind (repeatable). Default: all.",
)
@_days_option("runs-days", "PRUNE_RUNS_DAYS (90)", "run reports")
@_days_option("ingest-runs-days", "PRUNE_INGEST_RUNS_DAYS (90)", "ingestion attempts")
@_days_option("run-requests-days", "PRUNE_RUN_REQUESTS_DAYS (30)", "finished queued runs")
@_days_option("versions-days", "PRUNE_VERSIONS_DAYS (365)", "journaled message versions")
@click.option(
    "--versions-keep",
    type=click.IntRange(1, MAX_COUNT),
    metavar="N",
    help="Always keep the N newest versions of each message. Default: PRUNE_VERSIONS_KEEP (10).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    metavar="ROWS",
    help="Rows deleted per transaction. Default: PRUNE_BATCH_SIZE (1000).",
)
@json_option
@pass_app
def prune_command(
    app: AppContext,
    dry_run: bool,
    kinds: tuple[str, ...],
    runs_days: int | None,
    ingest_runs_days: int | None,
    run_requests_days: int | None,
    versions_days: int | None,
    versions_keep: int | None,
    batch_size: int | None,
    as_json: bool,
) -> None:
    """Delete old journal rows: run reports, ingestion attempts, finished queued runs, old message
    versions (the newest of each message kept) and expired work leases.

    \b
    Messages, documents, topics, the failure journal and skip markers are never deleted. Deletes go
    in batches, each its own short transaction. `run` and `worker` prune by themselves at most every
    PRUNE_AUTO_HOURS (24; 0 turns that off). See docs/USER_GUIDE.md (Retention).

    \b
    Examples:
      tg-parser db prune --dry-run
      tg-parser db prune --versions-days 90 --versions-keep 3 --json
      tg-parser db prune --only leases
    """
    policy = RetentionPolicy.from_settings(
        app.settings,
        runs_days=runs_days,
        ingest_runs_days=ingest_runs_days,
        run_requests_days=run_requests_days,
        versions_days=versions_days,
        versions_keep=versions_keep,
        batch_size=batch_size,
    )
    db = app.database()
    report = prune(db, policy, dry_run=dry_run, kinds=kinds or KINDS)
    run_id = None if dry_run else record_prune(db, report)
    if as_json:
        emit_json({**report.as_dict(), "run_id": run_id})
        return
    rows = [
        {
            "kind": kind.kind,
            "older than": kind.cutoff if kind.enabled else "(kept: age 0)",
            "would delete" if dry_run else "deleted": kind.rows,
            "batches": kind.batches,
        }
        for kind in report.kinds
    ]
    emit_table(rows, ["kind", "older than", "would delete" if dry_run else "deleted", "batches"])
    verb = "would delete" if dry_run else "deleted"
    click.echo(
        f"{verb} {report.total} row(s) in {report.seconds:.2f} s"
        + (" (dry run: nothing changed)" if dry_run else "")
    )


# The bulk migrator's commands live in their own module; they belong to this group.
from tg_parser.cli.db_transfer import checksum, migrate_to_postgres  # noqa: E402

command.add_command(migrate_to_postgres)
command.add_command(checksum)
