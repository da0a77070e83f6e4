"""tg-parser db migrate-to-postgres / db checksum (the bulk migrator, DESIGN.md §8)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import click

from tg_parser.cli.context import AppContext, pass_app
from tg_parser.cli.output import (
    emit_json,
    emit_table,
    json_option,
    progress_bar,
    say_error,
    show_progress,
    silent_option,
    to_json,
)
from tg_parser.db.resources import STORES
from tg_parser.errors import ConfigError, InvalidInput, TgParserError

Tick = Callable[[int], None]


def progress_factory(silent: bool) -> Callable[[str, int], AbstractContextManager[Tick]] | None:
    """A progress bar per phase/table on stderr, only at a terminal."""
    if not show_progress(silent):
        return None

    @contextmanager
    def bar(label: str, total: int) -> Iterator[Tick]:
        if total <= 0:
            with nullcontext(lambda n: None) as tick:
                yield tick
            return
        with progress_bar(total, f"{label:<40}") as progress:
            yield progress.update

    return bar


def _stores_option(func: Callable[..., object]) -> Callable[..., object]:
    return click.option(
        "--store",
        "stores",
        multiple=True,
        type=click.Choice(STORES),
        help="Only this store (repeatable). Default: all three.",
    )(func)


@click.command("migrate-to-postgres")
@click.option(
    "--from-sqlite",
    "source_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory of the SQLite store files. Default: DB_SQLITE_DIR.",
)
@click.option(
    "--to",
    "dsn",
    metavar="DSN",
    help="Target as postgresql://user:password@host:port/dbname. Default: DATABASE_URL or DB_HOST/DB_PORT/….",
)
@_stores_option
@click.option("--dry-run", is_flag=True, help="Load and verify everything, then roll back.")
@click.option(
    "--truncate", is_flag=True, help="Replace rows already in the target tables (in the same transaction)."
)
@click.option(
    "--verify-only", is_flag=True, help="Load nothing: compare the source with the target's current rows."
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the report as JSON to this file.",
)
@click.option(
    "--on-nul",
    type=click.Choice(["fail", "strip"]),
    default="fail",
    show_default=True,
    help="NUL characters (PostgreSQL cannot store them): refuse, or strip them and count the changed cells.",
)
@click.option(
    "--batch-size",
    default=500,
    show_default=True,
    type=click.IntRange(1, 1_000_000),
    help="Rows read from SQLite per fetch, and written to the COPY between looks at the scan's results;"
    " memory holds one batch, so lower it when single rows are very large (megabytes of JSON).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Processes scanning the source (hostile values, source checksums): N-1 helpers (at least one)"
    " beside the load, joined by this one after it. Default: CPU count (max 4).",
)
@json_option
@silent_option
@pass_app
def migrate_to_postgres(
    app: AppContext,
    source_dir: Path | None,
    dsn: str | None,
    stores: tuple[str, ...],
    dry_run: bool,
    truncate: bool,
    verify_only: bool,
    report_path: Path | None,
    on_nul: str,
    batch_size: int,
    workers: int | None,
    as_json: bool,
    silent: bool,
) -> None:
    """Copy a SQLite install into PostgreSQL with COPY and prove it with per-table checksums.

    Preflight first (versions, schemas, empty target); then one transaction: COPY every table while
    helper processes scan the source for hostile values and compute its checksums, reset sequences,
    compare checksums read back from PostgreSQL, ANALYZE, COMMIT. Any offender, error or mismatch rolls
    everything back. Exit 0 only when every table matches.
    See docs/MIGRATION_GUIDE_SQLITE_TO_POSTGRES.md.

    \b
    Examples:
      tg-parser db migrate-to-postgres --to postgresql://tgp@db/tgp --dry-run
      tg-parser db migrate-to-postgres --to postgresql://tgp@db/tgp --report r.json
      tg-parser db migrate-to-postgres --to postgresql://tgp@db/tgp --verify-only
    """
    from tg_parser.db.connect import parse_database_url, pg_target
    from tg_parser.transfer import TransferOptions, run_transfer

    if dry_run and verify_only:
        raise InvalidInput("--dry-run and --verify-only exclude each other", "choose one")
    if report_path is not None:
        _check_report_path(report_path)
    settings = app.settings
    try:
        target = parse_database_url(dsn) if dsn else pg_target(settings)
    except ConfigError as exc:
        raise ConfigError(exc.message, "give --to DSN, or " + (exc.hint or "set DATABASE_URL")) from None
    if dsn:
        from tg_parser.logging import register_secrets

        register_secrets([target.password] if target.password else [])
    options = TransferOptions(
        source_dir=source_dir or settings.db_sqlite_dir,
        target=target,
        stores=stores or STORES,
        dry_run=dry_run,
        truncate=truncate,
        verify_only=verify_only,
        on_nul=on_nul,
        batch_size=batch_size,
        busy_timeout_ms=settings.db_sqlite_busy_timeout,
        connect_timeout=settings.db_connect_timeout,
        progress=progress_factory(silent or as_json),
    )
    if workers:
        options.workers = workers
    report = run_transfer(options)
    data = report.as_dict()
    if as_json:
        emit_json(data)
    else:
        _print_report(report)
    if report_path is not None:  # after the report is shown: a failure here must not hide the outcome
        try:
            report_path.write_text(to_json(data) + "\n", encoding="utf-8")
        except OSError as exc:
            unwritten = TgParserError(
                f"cannot write the report to {report_path}: {exc.strerror or exc}",
                "the migration's outcome is shown above; give --report a file you can write",
            )
            unwritten.exit_code = report.exit_code or unwritten.exit_code  # a failed migration's status wins
            raise unwritten from None
    if report.exit_code:
        click.get_current_context().exit(report.exit_code)


def _check_report_path(path: Path) -> None:
    """Refuse a --report file that cannot be written before the migration runs (it may take hours),
    rather than after it, with a driver-free one-line reason."""
    parent = path.parent
    if not parent.is_dir():
        reason = "does not exist" if not parent.exists() else "is not a directory"
        raise InvalidInput(
            f"cannot write the report to {path}: its directory {parent} {reason}",
            "give --report a file in an existing directory",
        )
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InvalidInput(
            f"cannot write the report to {path}: permission denied", "give --report a file you can write"
        )


def _print_report(report: object) -> None:
    from tg_parser.transfer.report import COLUMNS, TransferReport

    assert isinstance(report, TransferReport)
    click.echo(f"{report.mode}: {report.source} → {report.target} ({report.consistency or 'not opened'})")
    if report.tables:
        emit_table(report.table_rows(), list(COLUMNS))
    for entry in report.tables:
        for difference in entry.differences:
            key = ", ".join(f"{k}={v!r}" for k, v in difference.key.items())
            click.echo(f"  {entry.table} [{key}]: {difference.problem}")
    if report.offenders:
        click.echo(f"Offending values ({report.offenders_total}; table [key] column: problem):")
        for offender in report.offenders:
            click.echo("  " + offender.one_line())
        if report.offenders_total > len(report.offenders):
            click.echo(f"  … and {report.offenders_total - len(report.offenders)} more, not listed")
    for note in report.notes:
        click.echo(f"Note: {note}")
    if report.phases:
        click.echo("Phases: " + ", ".join(f"{k} {v:.1f}s" for k, v in report.phases.items()))
    if report.status == "ok":
        done = (
            "committed"
            if report.committed
            else ("verified" if report.mode == "verify" else "rolled back (dry run)")
        )
        click.echo(f"OK: every table matches; {done}.")
    else:
        say_error(report.error or report.status)


@click.command("checksum")
@_stores_option
@json_option
@silent_option
@pass_app
def checksum(app: AppContext, stores: tuple[str, ...], as_json: bool, silent: bool) -> None:
    """Print per-table row counts and checksums of the configured database (SQLite or PostgreSQL).

    The rendering is the same on both dialects, so the output of two installs can be compared
    line by line (e.g. a SQLite install and the PostgreSQL database it was migrated to).

    \b
    Examples:
      tg-parser db checksum
      tg-parser db checksum --store raw --json
    """
    from tg_parser.transfer import database_checksums

    result = database_checksums(app.settings, stores or STORES, progress=progress_factory(silent or as_json))
    if as_json:
        emit_json(result)
        return
    click.echo(result["database"])
    emit_table(result["tables"], ["table", "rows", "checksum"])
