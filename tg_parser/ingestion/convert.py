"""Telethon messages → RawMessage records (posts and comments).

Ids, by design (see docs/USER_GUIDE.md, "Comments"):

* a post is `tg:<channel_id>:post:<id>` with the channel's own message id;
* a comment is `tg:<channel_id>:comment:<id>` where `<channel_id>` is the *channel's* id (so all of one
  channel shares a prefix) and `<id>` is the comment's id in the linked discussion group's id space;
  `parent_message_id` (what the comment replies to) is in that discussion id space too, while `thread_id`
  is the channel post id the comments hang under — what `https://t.me/<channel>/<post>?comment=<id>` uses.
  The payload also keeps `discussion_chat_id` and `discussion_root_id` (the post's copy in the group).

`raw_payload` is Telethon's own `to_dict()` made JSON-safe (bytes as base64, datetimes as ISO UTC): views,
forwards, replies, edit date, author, grouped id, media, entities, forward header and the rest, so
nothing Telegram said is lost. `store_batch` caps it at 256 KiB keeping the key fields.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from telethon.tl import types

from tg_parser.domain.models import RawMessage


def is_content(message: Any) -> bool:
    """Service messages (joins, title changes, pins...) and empty slots are not content."""
    return isinstance(message, types.Message)


def jsonable(value: Any) -> Any:
    """Telethon's to_dict() output → plain JSON values."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _document_kind(document: types.Document, media: types.MessageMediaDocument) -> str:
    attrs = document.attributes or []
    if any(isinstance(a, types.DocumentAttributeSticker) for a in attrs):
        return "sticker"
    if any(isinstance(a, types.DocumentAttributeAnimated) for a in attrs):
        return "animation"
    for a in attrs:
        if isinstance(a, types.DocumentAttributeVideo):
            return "video_note" if a.round_message or media.round else "video"
        if isinstance(a, types.DocumentAttributeAudio):
            return "voice" if a.voice or media.voice else "audio"
    return "document"


def media_metadata(media: Any) -> tuple[str | None, dict[str, Any] | None]:
    """(media_type, metadata) for a message's media; never downloads anything."""
    if media is None or isinstance(media, types.MessageMediaEmpty):
        return None, None
    if isinstance(media, types.MessageMediaPhoto):
        photo = media.photo
        meta: dict[str, Any] = {"type": "photo", "spoiler": bool(media.spoiler)}
        if isinstance(photo, types.Photo):
            sizes = [s for s in photo.sizes if hasattr(s, "w") and hasattr(s, "h")]
            largest = max(sizes, key=lambda s: s.w * s.h, default=None)
            meta.update(
                {
                    "photo_id": photo.id,
                    "width": getattr(largest, "w", None),
                    "height": getattr(largest, "h", None),
                }
            )
        return "photo", meta
    if isinstance(media, types.MessageMediaDocument):
        document = media.document
        if not isinstance(document, types.Document):
            return "document", {"type": "document", "available": False}
        kind = _document_kind(document, media)
        meta = {
            "type": kind,
            "document_id": document.id,
            "mime_type": document.mime_type,
            "size": document.size,
        }
        for a in document.attributes or []:
            if isinstance(a, types.DocumentAttributeFilename):
                meta["file_name"] = a.file_name
            elif isinstance(a, types.DocumentAttributeVideo):
                meta.update({"duration": a.duration, "width": a.w, "height": a.h})
            elif isinstance(a, types.DocumentAttributeAudio):
                meta.update({"duration": a.duration, "title": a.title, "performer": a.performer})
            elif isinstance(a, types.DocumentAttributeImageSize):
                meta.update({"width": a.w, "height": a.h})
            elif isinstance(a, types.DocumentAttributeSticker):
                meta["emoji"] = a.alt
        return kind, meta
    if isinstance(media, types.MessageMediaWebPage):
        page = media.webpage
        meta = {"type": "webpage"}
        if isinstance(page, types.WebPage):
            meta.update(
                {
                    "url": page.url,
                    "site_name": page.site_name,
                    "title": page.title,
                    "description": page.description,
                }
            )
        return "webpage", meta
    if isinstance(media, types.MessageMediaPoll):
        poll = media.poll
        question = poll.question.text if hasattr(poll.question, "text") else str(poll.question)
        answers = [a.text.text if hasattr(a.text, "text") else str(a.text) for a in poll.answers]
        return "poll", {"type": "poll", "question": question, "answers": answers, "quiz": bool(poll.quiz)}
    if isinstance(media, types.MessageMediaVenue):
        return "venue", {"type": "venue", "title": media.title, "address": media.address}
    if isinstance(media, types.MessageMediaGeo | types.MessageMediaGeoLive):
        geo = media.geo
        return "geo", {"type": "geo", "lat": getattr(geo, "lat", None), "long": getattr(geo, "long", None)}
    if isinstance(media, types.MessageMediaContact):
        return "contact", {"type": "contact", "first_name": media.first_name, "last_name": media.last_name}
    if isinstance(media, types.MessageMediaDice):
        return "dice", {"type": "dice", "emoticon": media.emoticon, "value": media.value}
    name = type(media).__name__.removeprefix("MessageMedia").lower() or "unknown"
    return name, {"type": name}


def _payload(message: types.Message, media_type: str | None, extra: dict[str, Any]) -> dict[str, Any]:
    payload = jsonable(message.to_dict())
    payload["media_type"] = media_type
    payload.update(extra)
    return payload


def post_record(message: types.Message, *, channel_id: int, source_id: str) -> RawMessage:
    """A channel post as a raw record (the caller has checked `is_content`)."""
    media_type, media = media_metadata(message.media)
    replies = message.replies.replies if isinstance(message.replies, types.MessageReplies) else None
    reply_to = message.reply_to if isinstance(message.reply_to, types.MessageReplyHeader) else None
    return RawMessage.build(
        channel_id=channel_id,
        message_type="post",
        message_id=message.id,
        source_id=source_id,
        date=_aware(message.date),
        edit_date=_aware(message.edit_date),
        text=message.message or "",
        parent_message_id=reply_to.reply_to_msg_id if reply_to else None,
        grouped_id=message.grouped_id,
        views=message.views,
        forwards=message.forwards,
        replies=replies,
        media_type=media_type,
        media=media,
        raw_payload=_payload(message, media_type, {}),
    )


def comment_record(message: types.Message, *, channel_id: int, post_id: int, source_id: str) -> RawMessage:
    """A comment from the discussion group; ids stay in the discussion group's id space."""
    media_type, media = media_metadata(message.media)
    reply_to = message.reply_to if isinstance(message.reply_to, types.MessageReplyHeader) else None
    parent = reply_to.reply_to_msg_id if reply_to else None
    root = (reply_to.reply_to_top_id or reply_to.reply_to_msg_id) if reply_to else None
    discussion = message.peer_id.channel_id if isinstance(message.peer_id, types.PeerChannel) else None
    replies = message.replies.replies if isinstance(message.replies, types.MessageReplies) else None
    return RawMessage.build(
        channel_id=channel_id,
        message_type="comment",
        message_id=message.id,
        source_id=source_id,
        date=_aware(message.date),
        edit_date=_aware(message.edit_date),
        text=message.message or "",
        thread_id=post_id,
        parent_message_id=parent,
        grouped_id=message.grouped_id,
        views=message.views,
        forwards=message.forwards,
        replies=replies,
        media_type=media_type,
        media=media,
        raw_payload=_payload(
            message,
            media_type,
            {"post_id": post_id, "discussion_chat_id": discussion, "discussion_root_id": root},
        ),
    )


def comments_channel(replies: Any) -> bool:
    """Does this post's MessageReplies describe channel comments (a discussion thread) with content?"""
    return isinstance(replies, types.MessageReplies) and bool(replies.comments) and (replies.replies or 0) > 0
