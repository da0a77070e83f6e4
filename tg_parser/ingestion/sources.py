"""Source operations shared by `tg-parser sources` and the HTTP API: the same rules and the same errors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tg_parser.config import Settings
from tg_parser.db.base import Database
from tg_parser.domain.channels import parse_channel_ref
from tg_parser.domain.models import DiscussionCursor, Source, SourceStatus
from tg_parser.errors import InvalidInput
from tg_parser.stores import IngestionStore, RawStore

_CHANNEL_HINT = (
    "give a numeric channel id, a t.me link, or a source id/@username listed by 'tg-parser sources list'"
)


MAX_SOURCE_ID = 200
MAX_TITLE = 500


class SourceNotFound(InvalidInput):
    """An id the user gave names no source: bad input (exit 2; 404 over the API)."""


@dataclass(frozen=True)
class AddedSource:
    created: bool
    source: Source
    resolved: bool  # Telegram was asked for the channel's identity


def add_source(
    settings: Settings,
    db: Database,
    channel: str,
    *,
    source_id: str | None = None,
    title: str | None = None,
    comments: bool = False,
    since: datetime | None = None,
    until: datetime | None = None,
) -> AddedSource:
    """Add a channel (@username, t.me link or numeric id) as a source, or update an existing one's options.

    With Telegram credentials and a session, Telegram is asked for the numeric id, username, title and
    access hash; without them what was typed is stored and the first ingestion resolves it. An existing
    source keeps its cursor, counters and status.
    """
    try:
        ref = parse_channel_ref(channel)
    except ValueError as exc:
        raise InvalidInput(str(exc), "example: tg-parser sources add @durov") from None
    if since and until and since > until:
        raise InvalidInput("--since is after --until", "swap the two dates")
    explicit_id = source_id is not None
    source_id = source_id if source_id is not None else ref.default_source_id()
    if not source_id.strip():
        raise InvalidInput("--id is empty", "give a non-empty source id")
    # The limits of the HTTP API's fields, for `tg-parser sources add` too: a megabyte title is a mistake.
    if len(source_id) > MAX_SOURCE_ID:
        raise InvalidInput(f"--id is longer than {MAX_SOURCE_ID} characters", "give a shorter source id")
    if title is not None and len(title) > MAX_TITLE:
        raise InvalidInput(f"--title is longer than {MAX_TITLE} characters", "give a shorter title")
    store = IngestionStore(db)
    from tg_parser.ingestion.resolve import resolve_channel

    hashes = [s.access_hash for s in store.sources_for_channel(ref.channel_id)] if ref.channel_id else []
    info = resolve_channel(settings, ref, next((h for h in hashes if h is not None), None), db=db)
    if info is not None and not explicit_id:
        # The channel may be a source already under another id (added by @username, now by id).
        known = [s for s in store.sources_for_channel(info.channel_id) if s.kind == "telegram"]
        source_id = known[0].source_id if known else source_id
    source = Source(
        source_id=source_id,
        channel_id=info.channel_id if info else ref.channel_id,
        username=info.username if info else ref.username,
        title=title or (info.title if info else None),
        access_hash=info.access_hash if info else None,
        include_comments=comments,
        since_date=since,
        until_date=until,
    )
    created = store.add_source(source)
    if not created:
        existing = store.get_source(source_id)
        if info is not None and existing is not None and existing.channel_id not in (None, info.channel_id):
            raise InvalidInput(
                f"source {source_id!r} is channel {existing.channel_id}, but {channel} is channel {info.channel_id}",
                "give another --id to add it as a separate source",
            )
        store.update_options(source_id, include_comments=comments, since_date=since, until_date=until)
        if info is not None:
            store.update_identity(
                source_id,
                channel_id=info.channel_id,
                username=info.username,
                title=title or info.title,
                access_hash=info.access_hash,
            )
    stored = store.get_source(source_id)
    assert stored is not None
    return AddedSource(created, stored, info is not None)


def set_source_status(db: Database, source_id: str, status: SourceStatus) -> Source:
    store = IngestionStore(db)
    if not store.set_status(source_id, status):
        raise SourceNotFound(f"no source {source_id!r}", "see 'tg-parser sources list'")
    source = store.get_source(source_id)
    assert source is not None
    return source


def require_source(db: Database, source_id: str) -> Source:
    """The source `source_id`, or SourceNotFound (e.g. before asking to confirm its removal)."""
    source = IngestionStore(db).get_source(source_id)
    if source is None:
        raise SourceNotFound(f"no source {source_id!r}", "see 'tg-parser sources list'")
    return source


def remove_source(db: Database, source_id: str) -> None:
    """Remove a source and its cursors; its stored messages and documents are kept."""
    if not IngestionStore(db).remove_source(source_id):
        raise SourceNotFound(f"no source {source_id!r}", "see 'tg-parser sources list'")


def resolve_channel_id(db: Database, text: str) -> int:
    """A source id, a numeric id (or -100… id), @username or t.me link of a channel we know."""
    store = IngestionStore(db)
    source = store.get_source(text)
    if source is not None and source.channel_id is not None:
        return source.channel_id
    try:
        ref = parse_channel_ref(text)
    except ValueError as exc:
        raise InvalidInput(str(exc), _CHANNEL_HINT) from None
    if ref.channel_id is not None:
        # A typo must not silently select nothing (and an export over `out/` write an empty KB).
        if store.sources_for_channel(ref.channel_id) or RawStore(db).count(ref.channel_id):
            return ref.channel_id
        raise InvalidInput(f"no source and no stored message for channel {ref.channel_id}", _CHANNEL_HINT)
    wanted = (ref.username or "").lower()
    for candidate in store.list_sources():
        if (candidate.username or "").lower() == wanted and candidate.channel_id is not None:
            return candidate.channel_id
    raise InvalidInput(f"no source with username @{ref.username} and a known channel id", _CHANNEL_HINT)


def comments_read(source: Source, stream: DiscussionCursor | None) -> str | None:
    """How a source's comments are read: None (off), "unavailable" (no discussion group, or out of
    reach), "per thread" (the group's history cannot be read: one request per thread with news) or
    "history" (one stream over the group's history)."""
    if not source.include_comments:
        return None
    if source.comments_unavailable:
        return "unavailable"
    if stream is not None and stream.history_error is not None:
        return "per thread"
    return "history"


def list_with_comments(db: Database, status: SourceStatus | None = None) -> list[dict[str, Any]]:
    """Sources as JSON values (`sources list --json`, `GET /api/v1/sources`), each with how its comments
    are read (`comments_read`), its discussion-history cursor and why that history cannot be read."""
    store = IngestionStore(db)
    streams = store.discussion_cursors()
    listed = []
    for source in store.list_sources(status):
        stream = streams.get(source.source_id)
        listed.append(
            {
                **source.model_dump(mode="json"),
                "comments_read": comments_read(source, stream),
                "discussion_last_id": stream.last_message_id if stream else None,
                "discussion_history_error": stream.history_error if stream else None,
            }
        )
    return listed
