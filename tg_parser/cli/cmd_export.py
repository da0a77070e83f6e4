"""tg-parser export: write the knowledge base (kb_entries.ndjson, topics.json, topic_<id>.json)."""

from __future__ import annotations

from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import click

from tg_parser.cli.context import AppContext, pass_app
from tg_parser.cli.output import emit_json, json_option, progress_bar, show_progress, silent_option
from tg_parser.cli.types import UTC_DATETIME
from tg_parser.errors import InvalidInput
from tg_parser.export import ExportFilters, count_documents, export
from tg_parser.export.parallel import AUTO_MIN_DOCUMENTS
from tg_parser.ingestion.sources import resolve_channel_id as resolve_channel
from tg_parser.stores.topics import TopicStore


@click.command("export")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out"),
    show_default=True,
    help="Folder for kb_entries.ndjson, topics.json and topic_<id>.json.",
)
@click.option("--channel", help="Only this channel (numeric id, @username or source id).")
@click.option(
    "--topic", "topic_id", help="Only the messages of this topic (its anchors and supporting items)."
)
@click.option("--since", type=UTC_DATETIME, help="Only messages dated on or after this (UTC).")
@click.option("--until", type=UTC_DATETIME, help="Only messages dated before this (UTC).")
@click.option(
    "--jobs",
    type=click.IntRange(1, 16),
    default=None,
    help="Processes that write the message entries (same bytes as one). Default: 2 when the export "
    f"holds at least {AUTO_MIN_DOCUMENTS:,} documents and 2 CPUs are usable, else 1.",
)
@json_option
@silent_option
@pass_app
def command(
    app: AppContext,
    out_dir: Path,
    channel: str | None,
    topic_id: str | None,
    since: datetime | None,
    until: datetime | None,
    jobs: int | None,
    as_json: bool,
    silent: bool,
) -> None:
    """Export processed documents and topics as knowledge-base entries for RAG.

    Files are written atomically (temporary name, then rename) in a deterministic order, and every
    record follows the JSON Schemas shipped in tg_parser/export/schemas/. Stale topic_<id>.json files
    from earlier exports are removed (except with --topic).

    \b
    Examples:
      tg-parser export --out out
      tg-parser export --channel durov --since 2025-01-01 --out kb
      tg-parser export --jobs 1 --out out
    """
    if since and until and since >= until:
        raise InvalidInput("--since is not before --until", "give a window where since < until")
    db = app.database()
    channel_id = resolve_channel(db, channel) if channel else None
    if topic_id is not None and TopicStore(db).get_topic(topic_id) is None:
        raise InvalidInput(f"unknown topic {topic_id!r}", "list topics in topics.json of a full export")
    filters = ExportFilters(channel_id=channel_id, topic_id=topic_id, since=since, until=until)
    with ExitStack() as stack:
        bar, documents = None, None
        if show_progress(silent or as_json):
            # Counted once: the same count sizes the bar and decides how the export is split.
            documents = count_documents(db, filters)
            bar = stack.enter_context(progress_bar(documents, "Exporting"))
        on_entry = (lambda: bar.update(1)) if bar else None
        result = export(db, out_dir, filters, on_entry, jobs=jobs, settings=app.settings, documents=documents)
    if as_json:
        emit_json(result.as_dict())
        return
    click.echo(
        f"Exported {result.message_entries} message entries and {result.topic_entries} topic entries "
        f"to {out_dir}/kb_entries.ndjson; {len(result.topic_files)} topic file(s) and topics.json beside it."
    )
