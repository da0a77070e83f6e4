"""Parsing what an operator types to name a channel: @username, t.me links, or a numeric id."""

from __future__ import annotations

import re
from dataclasses import dataclass

_USERNAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{3,31}$")
_LINK = re.compile(r"^(?:https?://)?(?:www\.)?(?:t|telegram)\.(?:me|dog)/(?P<rest>.+)$", re.I)


@dataclass(frozen=True)
class ChannelRef:
    """A channel as named by the operator: a numeric id, a username, or both once resolved."""

    channel_id: int | None = None
    username: str | None = None

    def default_source_id(self) -> str:
        return self.username.lower() if self.username else str(self.channel_id)


MAX_CHANNEL_ID = 2**63 - 1  # the stores keep channel ids as BIGINT


class ChannelIdTooLarge(ValueError):
    """A numeric channel id no store can hold (beyond a BIGINT)."""


def _bigint(number: int, text: str) -> int:
    if number > MAX_CHANNEL_ID:
        raise ChannelIdTooLarge(f"{text.strip()!r} is not a valid channel id (too large)")
    return number


def parse_channel_ref(text: str) -> ChannelRef:
    """Accept 1234567890, -1001234567890, @name, name, t.me/name, https://t.me/name/123, t.me/c/123/45."""
    value = text.strip()
    if not value:
        raise ValueError("empty channel reference")
    if re.fullmatch(r"-?\d+", value):
        number = int(value)
        if value.startswith("-100") and len(value) > 4:
            number = int(value[4:])  # Bot-API style id of a channel: -100<channel_id>
        elif number < 0:
            raise ValueError(f"{text!r} is a group/user id, not a channel id")
        if number <= 0:
            raise ValueError(f"{text!r} is not a valid channel id")
        return ChannelRef(channel_id=_bigint(number, text))
    link = _LINK.match(value)
    if link:
        parts = [p for p in link.group("rest").split("?")[0].split("/") if p]
        if parts and parts[0] == "c" and len(parts) >= 2 and parts[1].isdigit():
            return ChannelRef(channel_id=_bigint(int(parts[1]), text))
        if parts and parts[0] in ("s",) and len(parts) >= 2:
            parts = parts[1:]
        if not parts or parts[0].startswith("+") or parts[0] == "joinchat":
            raise ValueError(
                f"{text!r} is an invite link; join the channel and use its @username or numeric id"
            )
        value = parts[0]
    value = value.lstrip("@")
    if not _USERNAME.match(value):
        raise ValueError(
            f"{text!r} is not a channel username (5-32 letters, digits or _), a t.me link or a numeric id"
        )
    return ChannelRef(username=value)
