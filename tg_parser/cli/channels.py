"""Turn what the operator typed for --channel into a numeric channel id."""

from __future__ import annotations

from tg_parser.db.base import Database
from tg_parser.domain.channels import parse_channel_ref
from tg_parser.errors import InvalidInput
from tg_parser.stores import IngestionStore, RawStore

_HINT = "give a numeric channel id, a t.me link, or a source id/@username listed by 'tg-parser sources list'"


def resolve_channel(db: Database, text: str) -> int:
    """A source id, a numeric id (or -100… id), @username or t.me link of a channel we know."""
    store = IngestionStore(db)
    source = store.get_source(text)
    if source is not None and source.channel_id is not None:
        return source.channel_id
    try:
        ref = parse_channel_ref(text)
    except ValueError as exc:
        raise InvalidInput(str(exc), _HINT) from None
    if ref.channel_id is not None:
        # A typo must not silently select nothing (and an export over `out/` write an empty KB).
        if store.sources_for_channel(ref.channel_id) or RawStore(db).count(ref.channel_id):
            return ref.channel_id
        raise InvalidInput(f"no source and no stored message for channel {ref.channel_id}", _HINT)
    wanted = (ref.username or "").lower()
    for candidate in store.list_sources():
        if (candidate.username or "").lower() == wanted and candidate.channel_id is not None:
            return candidate.channel_id
    raise InvalidInput(f"no source with username @{ref.username} and a known channel id", _HINT)
