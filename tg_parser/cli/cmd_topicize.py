"""tg-parser topicize: group each channel's documents into topic cards and bundles."""

from __future__ import annotations

import click

from tg_parser.cli.context import AppContext, pass_app
from tg_parser.cli.output import emit_json, emit_table, json_option, say
from tg_parser.ingestion.sources import resolve_channel_id as resolve_channel
from tg_parser.processing.selection import build_topic_strategy, choose_processor
from tg_parser.topics.model import TopicGates
from tg_parser.topics.runner import topicize

PROCESSOR_OPTION = click.option(
    "--processor",
    type=click.Choice(["llm", "extractive"]),
    help="Override PROCESSOR: the LLM, or the offline extractive strategy (hashtags).",
)


@click.command("topicize")
@click.option("--channel", help="Only this channel (numeric id, @username or source id).")
@click.option("--force", is_flag=True, help="Recompute even when no document changed since the last run.")
@PROCESSOR_OPTION
@json_option
@pass_app
def command(app: AppContext, channel: str | None, force: bool, processor: str | None, as_json: bool) -> None:
    """Group documents into topics: cards (anchors) and bundles (supporting items).

    Documents go to the model in batches that fit TOPIC_BATCH_TOKENS; candidate topics are merged
    across batches, gated (see TOPIC_* settings) and written per channel in one transaction, replacing
    that channel's earlier topics. Channels with no new documents are skipped unless --force.
    Exit status 1 when any channel failed.

    \b
    Examples:
      tg-parser topicize
      tg-parser topicize --channel durov --force
    """
    db = app.database()
    kind, line = choose_processor(app.settings, processor)
    channels = [resolve_channel(db, channel)] if channel else None  # an unknown channel fails first
    if not as_json:
        say(line)
    strategy = build_topic_strategy(app.settings, kind)
    report = topicize(
        db,
        strategy,
        TopicGates.from_settings(app.settings),
        run_id=app.run_id or "topicize",
        channel_ids=channels,
        force=force,
    )
    counts = report.counts()
    if as_json:
        emit_json({"run_id": report.run_id, "ok": report.ok, **counts})
    else:
        emit_table(
            counts["per_channel"],
            ["channel_id", "status", "documents", "topics", "covered", "not_covered", "error"],
            empty="No channel has processed documents yet: run 'tg-parser process' first.",
        )
        click.echo(
            f"{counts['topics']} topic(s); {counts['documents_covered']} document(s) covered, "
            f"{counts['documents_not_covered']} not; tokens in/out {counts['input_tokens']}/{counts['output_tokens']}"
        )
    if not report.ok:
        click.get_current_context().exit(1)
