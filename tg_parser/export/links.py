"""Telegram links for exported entries (DESIGN.md §7).

Public channels: https://t.me/<username>/<post_id>; private ones: https://t.me/c/<channel_id>/<post_id>.
A comment links to its post with ?comment=<comment_id> (the comment id is in the discussion group's
id space, which is what Telegram's web client expects there).
"""

from __future__ import annotations


def message_link(
    *,
    channel_id: int,
    username: str | None,
    message_type: str,
    message_id: int,
    post_id: int | None = None,
) -> str:
    base = f"https://t.me/{username}" if username else f"https://t.me/c/{channel_id}"
    if message_type == "comment":
        if post_id is None:
            return base
        return f"{base}/{post_id}?comment={message_id}"
    return f"{base}/{message_id}"
