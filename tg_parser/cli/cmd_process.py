"""tg-parser process: turn raw messages into processed documents with an LLM."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from tg_parser.cli.cmd_topicize import PROCESSOR_OPTION
from tg_parser.cli.context import AppContext, pass_app
from tg_parser.cli.output import emit_json, emit_table, json_option, say, show_progress, silent_option
from tg_parser.cli.signals import stop_on_signals
from tg_parser.cli.types import FiniteFloatRange
from tg_parser.config.settings import MAX_COUNT, MAX_LEASE_SECONDS
from tg_parser.errors import EXIT_FAILURE, DatabaseUnavailable, InvalidInput, TgParserError
from tg_parser.ingestion.sources import resolve_channel_id as resolve_channel
from tg_parser.logging import STDERR_LOCK, live_line
from tg_parser.prices import estimate_cost, format_cost, price_table
from tg_parser.processing import (
    ProcessCoordinator,
    ProcessOptions,
    ProcessReport,
)
from tg_parser.processing import dry_run as estimate_run
from tg_parser.processing.coordinator import ProcessCounts
from tg_parser.processing.selection import build_document_processor, choose_processor
from tg_parser.stores import IngestionStore, ProcessingStore

EXIT_INTERRUPTED = 130


class DatabaseLost(TgParserError):
    """The database went away after the run had started: the work ran and failed (exit 1, as `ingest`
    and `run` do), not a configuration error. What was committed is kept and the next run resumes."""

    exit_code = EXIT_FAILURE


STOPPING = (
    "\nStopping: writing finished documents, abandoning requests in flight (Ctrl-C again to quit now)…\n"
)


@click.command("process")
@click.option("--source", "source_id", metavar="ID", help="Only messages of this source.")
@click.option("--channel", metavar="C", help="Only messages of this channel (@username, link or numeric id).")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=4,
    show_default=True,
    help="LLM requests in flight at once.",
)
@click.option("--limit", type=click.IntRange(1, MAX_COUNT), help="Send at most this many messages.")
@click.option("--force", is_flag=True, help="Process messages that already have a document again.")
@click.option("--retry-failed", is_flag=True, help="Also retry messages journaled as permanently failed.")
@click.option(
    "--dry-run", is_flag=True, help="Only count the messages and estimate input tokens; call nothing."
)
@click.option(
    "--lease-seconds",
    type=FiniteFloatRange(1, MAX_LEASE_SECONDS),
    help="How long a claimed message stays reserved for this worker (renewed every quarter of it while "
    "in flight; a dead worker's messages are taken over once it lapses). Default: PROCESS_LEASE_SECONDS (60).",
)
@click.option(
    "--list-failures", is_flag=True, help="Print the failure journal (newest first, up to --limit) and exit."
)
@PROCESSOR_OPTION
@json_option
@silent_option
@pass_app
def command(
    app: AppContext,
    source_id: str | None,
    channel: str | None,
    concurrency: int,
    limit: int | None,
    force: bool,
    retry_failed: bool,
    dry_run: bool,
    lease_seconds: float | None,
    list_failures: bool,
    processor: str | None,
    as_json: bool,
    silent: bool,
) -> None:
    """Process raw messages into documents (clean text, summary, topics, entities, language).

    Selects messages without a document (all of them with --force), sends up to --concurrency at
    once to the LLM configured by OPENAI_BASE_URL / LLM_MODEL / LLM_API, and writes the documents in
    batches. Several `process` runs may share one database: each message goes to one of them only.
    Failures are journaled; permanent ones are skipped later unless --retry-failed is given.

    Ctrl-C stops cleanly: finished documents are kept, requests in flight are abandoned and picked up
    by the next run. Exit status: 0 all done, 1 some messages failed, 3 configuration error (key,
    model, endpoint), 5 rate-limited for long, 130 interrupted.

    \b
    Examples:
      tg-parser process --concurrency 8
      tg-parser process --dry-run
      tg-parser process --force --processor llm
      tg-parser process --list-failures
    """
    if source_id and channel:
        raise InvalidInput("--source and --channel are exclusive", "give one of them")
    settings = app.settings
    db = app.database()
    if list_failures:
        _print_failures(ProcessingStore(db), limit or 50, as_json)
        return
    if source_id is not None and IngestionStore(db).get_source(source_id) is None:
        raise InvalidInput(f"no source {source_id!r}", "see 'tg-parser sources list'")
    channel_id = resolve_channel(db, channel) if channel else None
    options = ProcessOptions(
        source_id=source_id,
        channel_id=channel_id,
        concurrency=concurrency,
        limit=limit,
        force=force,
        retry_failed=retry_failed,
        lease_ttl=lease_seconds or settings.process_lease_seconds,
        shared_pause=settings.llm_shared_pause,
        read_ahead=settings.read_ahead_sessions,
    )

    kind, choice_line = choose_processor(settings, processor)
    if not as_json:
        say(choice_line)

    if dry_run:
        with build_document_processor(settings, kind, estimate_only=True) as built:
            estimate = estimate_run(db, built.processor, options)
        estimate["max_output_tokens"] = estimate["messages"] * built.max_output_tokens
        _estimate_cost(estimate, min(settings.llm_estimated_output_tokens, built.max_output_tokens), settings)
        if as_json:
            emit_json(estimate)
        else:
            click.echo(
                f"Would process {estimate['messages']} message(s) with {estimate['model']}: about "
                f"{estimate['estimated_input_tokens']:,} input tokens "
                f"(~{estimate['estimated_input_tokens_per_message']:,} per message), output at most "
                f"{estimate['max_output_tokens']:,} tokens. Nothing was sent."
                + (
                    f" {estimate['skipped_no_text']} message(s) without text would be skipped."
                    if estimate["skipped_no_text"]
                    else ""
                )
            )
        if not as_json and (estimate["estimated_input_tokens"] or estimate["estimated_output_tokens"]):
            click.echo(
                f"Estimated cost: {format_cost(estimate['estimated_cost_usd'])}, assuming "
                f"{estimate['estimated_output_tokens_per_message']:,} output tokens per message "
                "(LLM_ESTIMATED_OUTPUT_TOKENS; see 'tg-parser runs show' for a past run's real figure)."
            )
        return

    with build_document_processor(settings, kind) as built:
        built.tune(options)
        if not as_json and built.client is not None:
            say(built.description)
        coordinator = ProcessCoordinator(
            db, built.processor, options, run_id=app.run_id, run_params=built.run_params
        )
        with _progress(silent or as_json) as on_progress, stop_on_signals(coordinator.stop, STOPPING):
            coordinator.on_progress = on_progress
            try:
                report = coordinator.run()
            except DatabaseUnavailable as exc:
                raise DatabaseLost(
                    f"the database went away during the run: {exc.message}",
                    (exc.hint + "; " if exc.hint else "")
                    + "what was committed is kept, the next run takes over the rest once its leases lapse",
                ) from exc

    cost = estimate_cost(
        built.processor.model,
        report.counts.input_tokens,
        report.counts.output_tokens,
        price_table(settings.llm_prices),
    )
    if as_json:
        emit_json({**report.to_dict(), "estimated_cost_usd": None if cost is None else round(cost, 6)})
    else:
        _print_report(report, cost)
    if report.fatal is not None:
        raise report.fatal
    if report.status == "interrupted":
        click.get_current_context().exit(EXIT_INTERRUPTED)
    if report.counts.failed:
        click.get_current_context().exit(1)


def _estimate_cost(estimate: dict[str, Any], output_per_message: int, settings: Any) -> None:
    """Add the dry run's estimated output tokens and cost (USD, None without a price for the model)."""
    output = estimate["messages"] * output_per_message
    cost = estimate_cost(
        estimate["model"], estimate["estimated_input_tokens"], output, price_table(settings.llm_prices)
    )
    estimate["estimated_output_tokens_per_message"] = output_per_message
    estimate["estimated_output_tokens"] = output
    estimate["estimated_cost_usd"] = None if cost is None else round(cost, 6)
    estimate["estimated_cost_per_message_usd"] = (
        round(cost / estimate["messages"], 8) if cost is not None and estimate["messages"] else None
    )


@contextmanager
def _progress(quiet: bool) -> Iterator[Any]:
    """A one-line live status on stderr at a terminal; nothing in cron, CI or with --silent/--json."""
    if not show_progress(quiet):
        yield None
        return
    last = [0.0]
    line = [""]

    def redraw() -> None:  # after a log line took the status line's place (see logging.live_line)
        click.echo(line[0], err=True, nl=False)

    def show(counts: ProcessCounts) -> None:
        now = time.monotonic()
        if now - last[0] < 0.5:
            return
        last[0] = now
        line[0] = f"\r{counts.processed} written, {counts.failed} failed, {counts.claimed} claimed\x1b[K"
        with STDERR_LOCK:
            redraw()

    try:
        with live_line(redraw):
            yield show
    finally:
        if last[0]:
            click.echo("", err=True)


def _print_report(report: ProcessReport, cost: float | None) -> None:
    counts = report.counts
    line = (
        f"Run {report.run_id}: {report.status}. {counts.processed} document(s) written, "
        f"{counts.failed} failed, in {report.duration:.1f} s ({report.docs_per_second:.1f}/s)."
    )
    click.echo(line)
    details = [
        f"tokens in {counts.input_tokens:,} / out {counts.output_tokens:,}",
        f"requests {counts.requests} (retries {counts.retries})",
    ]
    if counts.input_tokens or counts.output_tokens:
        details.append(f"est. cost {format_cost(cost)}")
    if counts.skipped_no_text:
        details.append(f"{counts.skipped_no_text} without text skipped")
    if counts.skipped_leased:
        details.append(f"{counts.skipped_leased} taken by other workers")
    if counts.discarded:
        details.append(f"{counts.discarded} abandoned in flight (picked up by the next run)")
    click.echo("  " + "; ".join(details) + ".")
    if counts.failures_by_class:
        by_class = ", ".join(f"{name}: {n}" for name, n in counts.failures_by_class.items())
        click.echo(
            f"  Failures by class: {by_class} ({counts.failed_permanent} permanent, "
            f"{counts.failed_transient} to retry next run); details: tg-parser process --list-failures"
        )


def _print_failures(store: ProcessingStore, limit: int, as_json: bool) -> None:
    failures = store.failures(limit)
    if as_json:
        emit_json([f.model_dump(mode="json") for f in failures])
        return
    rows = [f.model_dump() for f in failures]
    emit_table(
        rows,
        ["source_ref", "error_class", "permanent", "attempts", "last_failed_at", "error_message"],
        empty="No failures journaled.",
    )
