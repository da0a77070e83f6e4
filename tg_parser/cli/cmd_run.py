"""tg-parser run: ingest → process → topicize → export, once or every interval (the worker's entry point)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import click

from tg_parser.cli.cmd_topicize import PROCESSOR_OPTION
from tg_parser.cli.context import AppContext, pass_app
from tg_parser.cli.output import emit_json, json_option, say
from tg_parser.cli.signals import stop_on_signals
from tg_parser.errors import InvalidInput, TgParserError
from tg_parser.pipeline.queue import QueueWorker
from tg_parser.pipeline.run import CycleReport, Pipeline, parse_interval
from tg_parser.processing.selection import build_topic_strategy, choose_processor
from tg_parser.retention import auto_prune


@click.command("run")
@click.option("--source", "source_ids", multiple=True, metavar="ID", help="Only this source (repeatable).")
@click.option(
    "--all", "all_sources", is_flag=True, help="Every active source (the default without --source)."
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out"),
    show_default=True,
    help="Where the export is written.",
)
@click.option(
    "--every", metavar="INTERVAL", help="Repeat forever with this pause between cycles (e.g. 15m, 1h)."
)
@click.option(
    "--concurrency", type=click.IntRange(1, 256), default=4, show_default=True, help="LLM requests in flight."
)
@PROCESSOR_OPTION
@json_option
@pass_app
def command(
    app: AppContext,
    source_ids: tuple[str, ...],
    all_sources: bool,
    out_dir: Path,
    every: str | None,
    concurrency: int,
    processor: str | None,
    as_json: bool,
) -> None:
    """Run the whole pipeline for each source, then export the knowledge base.

    \b
    For each source: ingest (Telegram sources; export sources were imported from their file),
    process new messages, topicize its channel. Then export everything to --out. One failing
    source does not stop the others. Exit status 0 when every step succeeded, 1 otherwise.

    With --every the cycle repeats until Ctrl-C or SIGTERM, which ends the pause at once, or the
    running cycle after its current step (this is the compose worker's entry point). Stopped that
    way, the exit status is still the last cycle's: 0 if it succeeded, 1 if it failed. Between
    cycles it also executes runs queued through the HTTP API (as 'tg-parser worker' does).
    After a cycle, old journal rows are pruned when PRUNE_AUTO_HOURS (24) have passed since the
    last prune (see 'tg-parser db prune'; PRUNE_AUTO_HOURS=0 turns that off).

    \b
    Examples:
      tg-parser run
      tg-parser run --all --every 15m --out /srv/kb
    """
    if source_ids and all_sources:
        raise InvalidInput("--source and --all are exclusive", "give one of them")
    interval = parse_interval(every) if every else None
    db = app.database()
    kind, line = choose_processor(app.settings, processor)
    pipeline = Pipeline(db, app.settings, kind, out_dir, run_id=app.run_id or "run", concurrency=concurrency)
    sources = pipeline.select_sources(source_ids, all_sources)  # an unknown --source fails before any output
    say(line)
    if not sources:
        say(
            "No active sources. Import an export (tg-parser ingest --from-export FILE) or add a channel "
            "(tg-parser sources add @channel).",
            "WARNING",
        )
    strategy = build_topic_strategy(app.settings, kind)
    queue = QueueWorker(db, app.settings, out_dir=out_dir, stop=pipeline.stop)
    with stop_on_signals(pipeline.stop, "\nStopping after the current step (Ctrl-C again to quit now)…\n"):
        cycle = 1
        while True:
            report = pipeline.cycle(sources, strategy)
            _print(report, out_dir, as_json)
            if not pipeline.stop.is_set():
                auto_prune(db, app.settings)  # when due (PRUNE_AUTO_HOURS); logs, never fails the run
            if interval is None or pipeline.stop.is_set():
                break
            say(f"Next cycle in {every}.")
            if _pause_executing_queued_runs(queue, interval):
                break
            cycle += 1
            # The cycle number keeps ids apart when two cycles end within one second (queued runs, a
            # paced test); the time says when the cycle before it ended.
            finished = report.finished_at or datetime.now(UTC)
            pipeline.run_id = f"{app.run_id}-{finished:%Y%m%dT%H%M%S}-{cycle}"
            from tg_parser.db.migrations import require_current

            require_current(db)  # a newer release may have migrated meanwhile: only additive is fine
            sources = pipeline.select_sources(source_ids, all_sources)
    if pipeline.stop.is_set():
        # A stop is asked for, not a failure: the exit status is still the last cycle's, so a supervisor
        # stopping a worker whose every cycle fails sees it fail.
        say(
            "Stopped." if report.ok else "Stopped; the last cycle failed.", "INFO" if report.ok else "WARNING"
        )
    if not report.ok:
        click.get_current_context().exit(1)


def _pause_executing_queued_runs(queue: QueueWorker, interval: float) -> bool:
    """Wait `interval` seconds between cycles, executing runs queued through the API meanwhile
    (looking every WORKER_POLL_SECONDS). True when a stop was asked for."""
    deadline = time.monotonic() + interval
    while not queue.stop.is_set():
        try:
            queue.drain()
        except TgParserError as exc:  # the queue is a side job here: the next cycle still runs
            say(f"run queue: {exc.one_line()}", "WARNING")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        queue.stop.wait(min(queue.settings.worker_poll_seconds, remaining))
    return True


def _print(report: CycleReport, out_dir: Path, as_json: bool) -> None:
    if as_json:
        emit_json(report.as_dict())
        return
    for source in report.sources:
        click.echo(f"{source.source_id}: {'ok' if source.ok else 'FAILED'}")
        for step in source.steps:
            click.echo(f"  {step.step:<9} {'ok' if step.ok else 'FAILED':<6} {step.detail}")
    if report.export is not None:
        click.echo(f"export    {'ok' if report.export.ok else 'FAILED':<6} {report.export.detail}")
        if report.export.ok:
            click.echo(f"Knowledge base: {out_dir / 'kb_entries.ndjson'}, {out_dir / 'topics.json'}")
