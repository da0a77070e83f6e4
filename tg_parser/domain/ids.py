"""The id rules of DESIGN.md §4.4: one key per message everywhere, derived ids built from it.

    source_ref = tg:<channel_id>:<post|comment>:<message_id>
    doc:<source_ref>   topic:<first anchor source_ref>   kb:msg:<source_ref>   kb:topic:<topic_id>

Comment ids live in the linked discussion group's id space: for a comment, ``channel_id`` is the
*channel's* id (so everything of one channel shares a prefix) and ``message_id`` is the comment's id in
the discussion group.
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

MessageType = Literal["post", "comment"]

_SOURCE_REF = re.compile(r"^tg:(-?\d+):(post|comment):(\d+)$")


class SourceRef(NamedTuple):
    channel_id: int
    message_type: MessageType
    message_id: int

    def __str__(self) -> str:
        return f"tg:{self.channel_id}:{self.message_type}:{self.message_id}"


def make_source_ref(channel_id: int, message_type: MessageType, message_id: int) -> str:
    if message_type not in ("post", "comment"):
        raise ValueError(f"message_type must be 'post' or 'comment', not {message_type!r}")
    if isinstance(channel_id, bool) or not isinstance(channel_id, int):
        raise ValueError(f"channel_id must be an integer, not {channel_id!r}")
    if isinstance(message_id, bool) or not isinstance(message_id, int) or message_id <= 0:
        raise ValueError(f"message_id must be a positive integer, not {message_id!r}")
    return f"tg:{channel_id}:{message_type}:{message_id}"


def parse_source_ref(value: str) -> SourceRef:
    match = _SOURCE_REF.fullmatch(value)
    if not match:
        raise ValueError(
            f"not a source_ref (expected tg:<channel_id>:<post|comment>:<message_id>): {value!r}"
        )
    channel, kind, message = match.groups()
    return SourceRef(int(channel), kind, int(message))  # type: ignore[arg-type]


def is_source_ref(value: str) -> bool:
    return bool(_SOURCE_REF.fullmatch(value))


def doc_id(source_ref: str) -> str:
    parse_source_ref(source_ref)
    return f"doc:{source_ref}"


def topic_id(first_anchor_ref: str) -> str:
    parse_source_ref(first_anchor_ref)
    return f"topic:{first_anchor_ref}"


def kb_message_id(source_ref: str) -> str:
    parse_source_ref(source_ref)
    return f"kb:msg:{source_ref}"


def kb_topic_id(topic: str) -> str:
    if not topic.startswith("topic:"):
        raise ValueError(f"not a topic id: {topic!r}")
    return f"kb:topic:{topic}"
