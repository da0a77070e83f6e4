"""tg-parser ingest: collect new posts (and comments) from Telegram, or import a Telegram Desktop export.

Exit codes (cron reads them; docs/USER_GUIDE.md has the table): 0 everything ok, 1 a source failed or
Telegram was unavailable, 2 bad arguments or a malformed export file, 3 configuration (settings, session
not logged in or revoked), 4 another run holds a source or the Telegram session, 5 Telegram rate-limited
a source or the connect (it is skipped until then).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import click

from tg_parser.cli.context import AppContext, pass_app
from tg_parser.cli.output import emit_json, json_option, progress_bar, show_progress, silent_option
from tg_parser.config.settings import MAX_COUNT
from tg_parser.domain.models import Source
from tg_parser.errors import EXIT_FAILURE, InvalidInput, TgParserError
from tg_parser.ingestion.errors import NotLoggedIn, RateLimited, SourceLocked, TelegramUnavailable
from tg_parser.ingestion.sources import MAX_SOURCE_ID
from tg_parser.stores import IngestionStore


class IngestFailed(TgParserError):
    exit_code = EXIT_FAILURE


@click.command("ingest")
@click.option("--source", "source_ids", multiple=True, metavar="ID", help="Ingest this source (repeatable).")
@click.option("--all", "all_sources", is_flag=True, help="Ingest every active Telegram source.")
@click.option(
    "--limit", type=click.IntRange(1, MAX_COUNT), help="At most N new posts per source in this run."
)
@click.option(
    "--from-export",
    "export_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Import a Telegram Desktop export (result.json) instead of calling Telegram.",
)
@click.option("--source-id", help="With --from-export: the source to import into (created if missing).")
@click.option("--chat", help="With --from-export of a whole account: the chat to import (name or id).")
@json_option
@silent_option
@pass_app
def command(
    app: AppContext,
    source_ids: tuple[str, ...],
    all_sources: bool,
    limit: int | None,
    export_file: Path | None,
    source_id: str | None,
    chat: str | None,
    as_json: bool,
    silent: bool,
) -> None:
    """Collect new posts (and comments) of sources from Telegram, or import an export file.

    \b
    tg-parser ingest --all                       every active source, from its cursor on
    tg-parser ingest --source durov --limit 200  one source, at most 200 new posts
    tg-parser ingest --from-export result.json   import a Telegram Desktop export (idempotent)

    A run takes a lock per source; a source locked by another run is skipped (exit 4). A source that
    Telegram rate-limits for longer than TELEGRAM_FLOOD_SLEEP_THRESHOLD is parked until then (exit 5).
    """
    if export_file is not None:
        if source_ids or all_sources or limit is not None:
            raise InvalidInput(
                "--from-export cannot be combined with --source, --all or --limit",
                "import the file on its own: tg-parser ingest --from-export FILE [--source-id ID] [--chat C]",
            )
        _import_export(app, export_file, source_id, chat, as_json, silent)
        return
    if source_id is not None or chat is not None:
        raise InvalidInput(
            "--source-id and --chat only apply to --from-export", "see tg-parser ingest --help"
        )
    if not source_ids and not all_sources:
        raise InvalidInput("nothing to ingest", "give --source ID (repeatable) or --all")
    if source_ids and all_sources:
        raise InvalidInput("--source and --all exclude each other", "give one of them")
    _ingest_telegram(app, source_ids, all_sources, limit, as_json)


# --- Telegram ---------------------------------------------------------------------------------------


def _select_sources(store: IngestionStore, source_ids: tuple[str, ...], all_sources: bool) -> list[Source]:
    if all_sources:
        return [s for s in store.list_sources("active") if s.kind == "telegram"]
    selected: list[Source] = []
    missing = []
    for source_id in dict.fromkeys(source_ids):
        source = store.get_source(source_id)
        if source is None:
            missing.append(source_id)
        else:
            selected.append(source)
    if missing:
        raise InvalidInput(
            f"no source {', '.join(repr(m) for m in missing)}",
            "see 'tg-parser sources list', or add it with 'tg-parser sources add'",
        )
    return selected


def _ingest_telegram(
    app: AppContext, source_ids: tuple[str, ...], all_sources: bool, limit: int | None, as_json: bool
) -> None:
    from tg_parser.ingestion.client import TelegramGateway
    from tg_parser.ingestion.runner import Ingestor, Policy

    settings = app.settings
    db = app.database()
    sources = _select_sources(IngestionStore(db), source_ids, all_sources)
    if not sources:
        message = "No active Telegram sources. Add one with: tg-parser sources add @channel"
        emit_json([]) if as_json else click.echo(message)
        return
    policy = Policy(
        batch_size=settings.ingest_batch_size, flood_sleep_threshold=settings.telegram_flood_sleep_threshold
    )
    with TelegramGateway.from_settings(settings) as gateway:
        gateway.open(db=db)  # the session lock first: one process per Telegram session
        ingestor = Ingestor(
            db,
            gateway,
            run_id=app.run_id or "run",
            policy=policy,
            sqlite_dir=settings.db_sqlite_dir if db.dialect == "sqlite" else None,
        )
        outcomes = ingestor.run(sources, limit=limit)
    if as_json:
        emit_json([o.as_dict() for o in outcomes])
    else:
        for outcome in outcomes:
            click.echo(_outcome_line(outcome))
    _exit_for(outcomes)


def _outcome_line(outcome: Any) -> str:
    c = outcome.counts
    parts = [f"{c.posts_inserted} new post(s) of {c.posts_fetched} fetched"]
    if c.comments_fetched or c.threads_read:
        parts.append(f"{c.comments_inserted} new comment(s) in {c.threads_read} thread(s)")
    if c.versions_recorded:
        parts.append(f"{c.versions_recorded} edit(s) journaled")
    if c.posts_rechecked:
        parts.append(f"{c.posts_rechecked} recent post(s) rechecked")
    detail = ", ".join(parts) if outcome.status in ("ok", "failed", "rate_limited") else ""
    note = f" — {outcome.message}" if outcome.message else ""
    return f"{outcome.source_id}: {outcome.status}" + (f", {detail}" if detail else "") + note


def _exit_for(outcomes: list[Any]) -> None:
    """Turn the outcomes into one exit code and one line: failure > locked > rate-limited > ok."""
    down = [o for o in outcomes if o.status == "unavailable"]
    if down:
        done = len(outcomes) - 1
        raise TelegramUnavailable(
            f"Telegram unavailable while ingesting {down[0].source_id!r} ({done} source(s) finished "
            f"before it, the rest were not attempted, none is charged a failure): {down[0].message}"
        )
    auth = [o for o in outcomes if o.auth_failed]
    if auth:
        raise NotLoggedIn(
            f"Telegram rejected the session while ingesting {auth[0].source_id!r}: {auth[0].message}",
            "run 'tg-parser telegram login', then 'tg-parser sources resume " + auth[0].source_id + "'",
        )
    failed = [o for o in outcomes if o.status == "failed"]
    locked = [o for o in outcomes if o.status == "locked"]
    limited = [o for o in outcomes if o.status == "rate_limited"]
    if failed:
        names = ", ".join(o.source_id for o in failed)
        first = failed[0].message
        raise IngestFailed(
            f"{len(failed)} of {len(outcomes)} source(s) failed ({names}): {first}",
            "see 'tg-parser sources list' for last_error; retryable failures are retried by the next run",
        )
    if locked:
        if len(locked) == 1:
            raise SourceLocked(locked[0].message)
        raise SourceLocked(
            f"{len(locked)} sources are being ingested by another run: {', '.join(o.source_id for o in locked)}",
            "they were skipped; the next scheduled run will pick them up",
        )
    if limited:
        soonest = min(o.retry_at for o in limited if o.retry_at is not None)
        raise RateLimited(
            0,
            f"Telegram rate-limited {len(limited)} source(s) ({', '.join(o.source_id for o in limited)}); "
            f"skipped until {soonest:%Y-%m-%d %H:%M:%S}Z",
        )


# --- Telegram Desktop export ------------------------------------------------------------------------


@contextmanager
def _progress_bars(silent: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """Byte-based progress bars on a terminal, one per pass; nothing in cron, CI or with --silent."""
    if not show_progress(silent):
        yield None
        return
    bars: dict[str, Any] = {}
    shown: dict[str, int] = {}
    labels = {"checking": "Checking ", "importing": "Importing"}
    current = ExitStack()  # the bar being drawn; the one before it is finished when the next phase starts

    def update(phase: str, done: int, total: int) -> None:
        if phase not in bars:
            current.close()
            bars[phase] = current.enter_context(progress_bar(max(total, 1), labels.get(phase, phase)))
            shown[phase] = 0
        step = min(done, total) - shown[phase]
        if step > 0:
            bars[phase].update(step)
            shown[phase] += step

    with current:
        yield update


def _import_export(
    app: AppContext, path: Path, source_id: str | None, chat: str | None, as_json: bool, silent: bool
) -> None:
    from tg_parser.ingestion.export_import import ExportImporter

    settings = app.settings
    if source_id is not None and len(source_id) > MAX_SOURCE_ID:
        raise InvalidInput(
            f"--source-id is longer than {MAX_SOURCE_ID} characters", "give a shorter source id"
        )
    if not path.exists():
        raise InvalidInput(f"{path} does not exist", "give the path of the export's result.json")
    db = app.database()
    with _progress_bars(silent or as_json) as progress:
        importer = ExportImporter(
            db,
            run_id=app.run_id or "run",
            batch_size=settings.ingest_batch_size,
            sqlite_dir=settings.db_sqlite_dir if db.dialect == "sqlite" else None,
            progress=progress,
        )
        result = importer.run(path, chat=chat, source_id=source_id)
    if as_json:
        emit_json(result.as_dict())
        return
    created = "new source" if result.source_created else "source"
    click.echo(
        f"Imported {result.chat.describe()} into {created} {result.source_id!r}: "
        f"{result.messages} message(s), {result.inserted} new, {result.versions} edit(s) journaled, "
        f"{result.unchanged} unchanged; {result.service_skipped} service message(s) skipped"
        + (f"; {result.escapes_fixed} \\xNN escape(s) repaired" if result.escapes_fixed else "")
    )
