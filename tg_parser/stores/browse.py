"""BrowseStore: what the HTTP API lists — messages, documents and topics a page at a time.

Every list is keyset-paged: a page starts after the previous page's last key, so a deep page costs what
the first does and rows inserted meanwhile are neither skipped nor repeated (they land in key order).
The key of the last row is what the API turns into its opaque `next` cursor.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tg_parser.stores.base import FAR_FUTURE, FAR_PAST, MessageKey, Store

Row = dict[str, Any]
# Lower than any channel id: the key before the first row.
MIN_BIGINT = -(2**63)


@dataclass(frozen=True)
class Window:
    """Filters shared by the lists; None means "any"."""

    channel_id: int | None = None
    source_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    topic_id: str | None = None


def _message_key(after: MessageKey | None) -> dict[str, Any]:
    channel, date, ref = after if after is not None else (MIN_BIGINT, FAR_PAST, "")
    return {"after_channel": channel, "after_date": date, "after_ref": ref}


class BrowseStore(Store):
    def messages_page(self, window: Window, after: MessageKey | None, limit: int) -> list[Row]:
        params = {
            **_message_key(after),
            "channel_id": window.channel_id,
            "source_id": window.source_id,
            "since": window.since or FAR_PAST,
            "until": window.until or FAR_FUTURE,
            "limit": limit,
        }
        return self.db.fetch_all("api_messages_page", params)

    def documents_page(self, window: Window, after: MessageKey | None, limit: int) -> list[Row]:
        params = {
            **_message_key(after),
            "channel_id": window.channel_id,
            "source_id": window.source_id,
            "topic_id": window.topic_id,
            "since": window.since or FAR_PAST,
            "until": window.until or FAR_FUTURE,
            "limit": limit,
        }
        return self.db.fetch_all("api_documents_page", params)

    def topics_page(self, channel_id: int | None, after: str | None, limit: int) -> list[Row]:
        params = {"after_id": after or "", "channel_id": channel_id, "limit": limit}
        return self.db.fetch_all("api_topics_page", params)
