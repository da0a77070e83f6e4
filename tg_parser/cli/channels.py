"""Turn what the operator typed for --channel into a numeric channel id."""

from __future__ import annotations

from tg_parser.db.base import Database
from tg_parser.domain.channels import parse_channel_ref
from tg_parser.errors import InvalidInput
from tg_parser.stores import IngestionStore


def resolve_channel(db: Database, text: str) -> int:
    """A numeric id, a -100… id, @username, t.me link, or a source id known to `sources list`."""
    store = IngestionStore(db)
    source = store.get_source(text)
    if source is not None and source.channel_id is not None:
        return source.channel_id
    try:
        ref = parse_channel_ref(text)
    except ValueError:
        ref = None
    if ref is not None and ref.channel_id is not None:
        return ref.channel_id
    if ref is not None and ref.username:
        for candidate in store.list_sources():
            if (
                candidate.username
                and candidate.username.lower() == ref.username.lower()
                and candidate.channel_id
            ):
                return candidate.channel_id
    raise InvalidInput(
        f"unknown channel {text!r}",
        "give a numeric channel id, or a source id/@username listed by 'tg-parser sources list'",
    )
