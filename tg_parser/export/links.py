"""Telegram links for exported entries (DESIGN.md §7).

Public channels: https://t.me/<username>/<post_id>; private ones: https://t.me/c/<channel_id>/<post_id>.
A comment links to its post with ?comment=<comment_id> (the comment id is in the discussion group's
id space, which is what Telegram's web client expects there).
"""

from __future__ import annotations


def channel_link(channel_id: int, username: str | None) -> str:
    """The channel's part of every link (the export builds it once per channel)."""
    return f"https://t.me/{username}" if username else f"https://t.me/c/{channel_id}"


def message_path(message_type: str, message_id: int, post_id: int | None) -> str:
    """What follows the channel's part: /<id>, or /<post_id>?comment=<id> for a comment."""
    if message_type == "comment":
        return "" if post_id is None else f"/{post_id}?comment={message_id}"
    return f"/{message_id}"
