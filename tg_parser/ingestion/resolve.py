"""Resolve what an operator typed (`@name`, a t.me link, a numeric id) through Telegram, for `sources add`."""

from __future__ import annotations

from tg_parser.config import Settings
from tg_parser.domain.channels import ChannelRef
from tg_parser.ingestion.client import ChannelInfo, TelegramGateway, telegram_configured


def resolve_channel(
    settings: Settings, ref: ChannelRef, access_hash: int | None = None
) -> ChannelInfo | None:
    """The channel's numeric id, username, title and access hash; None when Telegram is not configured
    (then `sources add` stores what was typed and ingestion resolves it on its first run).

    A numeric id needs an access hash: pass the one stored for that channel, if any (a string session
    keeps no entity cache between runs)."""
    if not telegram_configured(settings):
        return None
    with TelegramGateway.from_settings(settings) as gateway:
        gateway.open()
        return gateway.resolve(ref, access_hash=access_hash)
