"""tg-parser sources …: the channels to collect, their windows and state."""

from __future__ import annotations

import re
from datetime import datetime

import click

from tg_parser.cli.context import AppContext, pass_app
from tg_parser.cli.output import emit_json, emit_table, json_option
from tg_parser.cli.types import UTC_DATETIME
from tg_parser.domain.channels import parse_channel_ref
from tg_parser.domain.models import SourceStatus
from tg_parser.ingestion.sources import (
    add_source,
    list_with_comments,
    remove_source,
    require_source,
    set_source_status,
)


class _ChannelArgCommand(click.Command):
    """Lets CHANNEL be a Bot-API id such as -1001234567890, which click would take for an option."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" not in args:
            takes_value = {
                name for p in self.params if isinstance(p, click.Option) and not p.is_flag for name in p.opts
            }
            numbers = [
                i
                for i, a in enumerate(args)
                if re.fullmatch(r"-\d+", a) and (i == 0 or args[i - 1] not in takes_value)
            ]
            if numbers:
                rest = [a for i, a in enumerate(args) if i not in numbers]
                args = [*rest, "--", *(args[i] for i in numbers)]
        return super().parse_args(ctx, args)


@click.group("sources")
def command() -> None:
    """Add, list, pause, resume and remove channel sources.

    \b
    Examples:
      tg-parser sources add @durov --comments --since 2025-01-01
      tg-parser sources list
      tg-parser sources pause durov
    """


@command.command("add", cls=_ChannelArgCommand)
@click.argument("channel")
@click.option(
    "--id", "source_id", help="Source id to use (default: the username, or the numeric channel id)."
)
@click.option("--title", help="A title to show until Telegram provides the real one.")
@click.option(
    "--comments/--no-comments", default=False, help="Also collect comments from the discussion group."
)
@click.option("--since", type=UTC_DATETIME, help="Backfill no further back than this date (UTC).")
@click.option("--until", type=UTC_DATETIME, help="Ignore messages after this date (UTC).")
@json_option
@pass_app
def add(
    app: AppContext,
    channel: str,
    source_id: str | None,
    title: str | None,
    comments: bool,
    since: datetime | None,
    until: datetime | None,
    as_json: bool,
) -> None:
    """Add CHANNEL: @username, a t.me link or a numeric channel id.

    Adding a source that exists already changes nothing but its options (--comments, --since,
    --until): its cursor, counters and status are kept.

    \b
    Examples:
      tg-parser sources add @durov --comments --since 2025-01-01
      tg-parser sources add https://t.me/some_channel --id news
      tg-parser sources add 1234567890 --id mychannel --until 2025-06-30
    """
    added = add_source(
        app.settings,
        app.database(),
        channel,
        source_id=source_id,
        title=title,
        comments=comments,
        since=since,
        until=until,
    )
    created, stored = added.created, added.source
    if as_json:
        emit_json({"created": created, "source": stored})
        return
    typed = parse_channel_ref(channel).username
    click.echo(
        f"{'Added' if created else 'Updated'} source {stored.source_id!r}"
        + (f" ({typed})" if typed else "")
        + (f": channel {stored.channel_id}, {stored.title!r}" if added.resolved else "")
    )


@command.command("list")
@click.option(
    "--status", type=click.Choice(["active", "paused", "error"]), help="Only sources in this status."
)
@json_option
@pass_app
def list_sources(app: AppContext, status: str | None, as_json: bool) -> None:
    """List sources with their cursor and health.

    \b
    Examples:
      tg-parser sources list
      tg-parser sources list --status error --json
    """
    listed = list_with_comments(app.database(), status)  # type: ignore[arg-type]
    if as_json:
        emit_json(listed)
        return
    rows = [
        {
            "source_id": s["source_id"],
            "channel": (s["username"] and f"@{s['username']}") or s["channel_id"],
            "kind": s["kind"],
            "status": s["status"],
            "comments": s["comments_read"] or "off",
            "last_post_id": s["last_post_id"],
            "last_success": s["last_success_at"],
            "fails": s["fail_count"],
        }
        for s in listed
    ]
    emit_table(
        rows,
        ["source_id", "channel", "kind", "status", "comments", "last_post_id", "last_success", "fails"],
        empty="No sources yet. Add one with: tg-parser sources add @channel",
    )


def _set_status(app: AppContext, source_id: str, status: SourceStatus) -> None:
    set_source_status(app.database(), source_id, status)
    click.echo(f"{source_id}: {status}")


@command.command("pause")
@click.argument("source_id")
@pass_app
def pause(app: AppContext, source_id: str) -> None:
    """Stop collecting SOURCE_ID until resumed.

    \b
    Example:
      tg-parser sources pause durov
    """
    _set_status(app, source_id, "paused")


@command.command("resume")
@click.argument("source_id")
@pass_app
def resume(app: AppContext, source_id: str) -> None:
    """Collect SOURCE_ID again (also clears the error status).

    \b
    Example:
      tg-parser sources resume durov
    """
    _set_status(app, source_id, "active")


@command.command("remove")
@click.argument("source_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_app
def remove(app: AppContext, source_id: str, yes: bool) -> None:
    """Remove SOURCE_ID and its cursors. Stored messages and documents are kept.

    \b
    Example:
      tg-parser sources remove durov --yes
    """
    if not yes:
        require_source(app.database(), source_id)  # an unknown id is refused, not asked about
        click.confirm(f"Remove source {source_id!r} and its cursors?", abort=True)
    remove_source(app.database(), source_id)
    click.echo(f"Removed {source_id}")
