"""A fake Telegram at the client boundary, serving real Telethon types and raising real Telethon errors.

`FakeTelegramClient` is a real `telethon.TelegramClient` subclass whose network call (`_call`) is
answered from an in-memory world instead of Telegram's servers. Everything above it runs unchanged:
`iter_messages` and its paging (offset ids, `add_offset`, reverse order, the second request after a
short page), `get_entity`/`get_input_entity` with the session's entity cache, `is_user_authorized`,
`get_me`. Every response is serialized to Telegram's binary TL format and parsed back, so the objects the
code under test sees are exactly what Telethon builds from a real server's bytes (`telethon.tl.types`
Message, MessageService, PeerChannel, MessageReplies, MessageMediaPhoto, ...).

Failures are injected per request type with `world.fail(...)`: FloodWaitError, ChannelPrivateError,
MsgIdInvalidError, AuthKeyUnregisteredError, ConnectionError, or any exception — including a
BaseException that stands for the process being killed in the middle of a run.

The behaviours of a real server and of Telethon that the ingestion has to survive are reproduced too:

* `connect()` sends what Telethon's sends (the layer's GetConfig, then get_me and GetState) through the
  same answer path, so errors injected on those requests surface from `connect()` as they would;
* `world.drop` (use it as a failure: `world.fail(Request, world.drop)`) cuts the connection of every
  client: the call fails with ConnectionError and every later call fails at once with Telethon's
  "Cannot send requests while disconnected" until the client connects again (Telethon's own reconnect
  tries have given up); `world.offline` makes those connects fail;
* a `TELEGRAM_SESSION_FILE` stays a real Telethon SQLite session file: while a client is connected, the
  file is write-locked by its uncommitted entity writes, so a second client on the same file fails in
  `connect()` with "database is locked" exactly as a second process would (after a short busy timeout
  here instead of Telethon's 5 s);
* `world.page_cap` makes history pages shorter than asked although more messages follow, and
  `world.empty_ids` serves some message slots as `MessageEmpty`;
* a discussion group can be made unreadable (`ban_from_discussion`) or unlinked (`unlink_discussion`),
  or its history closed while its threads stay readable through the channel (`close_discussion_history`:
  a private group this account has not joined); it can hold its own chatter (`chatter`) and service
  messages (`group_service`) besides the posts' forwarded copies and the comments.

Only the login steps (`send_code_request`, `sign_in`) are overridden at a higher level: their real
implementations need Telegram's SRP password exchange, which has nothing to do with tg-parser's code.
"""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from telethon import TelegramClient, utils
from telethon import errors as tg_errors
from telethon.crypto import AuthKey
from telethon.extensions import BinaryReader
from telethon.sessions import SQLiteSession, StringSession
from telethon.tl import functions, types

BASE_DATE = datetime(2025, 1, 1, 9, 0, tzinfo=UTC)
ME_ID = 777000111


class SimulatedCrash(BaseException):
    """Stands for the process being killed: not an Exception, so nothing in tg-parser handles it."""


def roundtrip(value: Any) -> Any:
    """Serialize a TL object to Telegram's wire bytes and parse it back, as Telethon does for responses."""
    if isinstance(value, list):
        return [roundtrip(v) for v in value]
    return BinaryReader(bytes(value)).tgread_object()


# --- media builders -----------------------------------------------------------------------------------


def photo(photo_id: int = 1, w: int = 1280, h: int = 720, spoiler: bool = False) -> types.MessageMediaPhoto:
    return types.MessageMediaPhoto(
        spoiler=spoiler or None,
        photo=types.Photo(
            id=photo_id,
            access_hash=photo_id * 7,
            file_reference=os.urandom(8),
            date=BASE_DATE,
            sizes=[types.PhotoSize("m", 320, 180, 9000), types.PhotoSize("y", w, h, 120_000)],
            dc_id=2,
        ),
    )


def video(doc_id: int = 2, duration: float = 12.5, name: str = "clip.mp4") -> types.MessageMediaDocument:
    return types.MessageMediaDocument(
        video=True,
        document=types.Document(
            id=doc_id,
            access_hash=doc_id * 11,
            file_reference=b"\x00\x01",
            date=BASE_DATE,
            mime_type="video/mp4",
            size=3_000_000,
            dc_id=2,
            attributes=[
                types.DocumentAttributeVideo(duration=duration, w=1920, h=1080),
                types.DocumentAttributeFilename(file_name=name),
            ],
        ),
    )


def voice(doc_id: int = 3, duration: int = 7) -> types.MessageMediaDocument:
    return types.MessageMediaDocument(
        voice=True,
        document=types.Document(
            id=doc_id,
            access_hash=1,
            file_reference=b"",
            date=BASE_DATE,
            mime_type="audio/ogg",
            size=40_000,
            dc_id=2,
            attributes=[types.DocumentAttributeAudio(duration=duration, voice=True)],
        ),
    )


def webpage(url: str = "https://example.org/article", title: str = "An article") -> types.MessageMediaWebPage:
    return types.MessageMediaWebPage(
        webpage=types.WebPage(id=5, url=url, display_url=url, hash=0, title=title, site_name="Example")
    )


# --- the world ----------------------------------------------------------------------------------------


@dataclass
class FakeChannel:
    id: int
    access_hash: int
    title: str
    username: str | None = None
    megagroup: bool = False
    private: bool = False  # every request about it answers CHANNEL_PRIVATE
    history_closed: bool = False  # its own history answers CHANNEL_PRIVATE (threads stay readable)
    linked_chat_id: int | None = None
    messages: dict[int, types.TypeMessage] = field(default_factory=dict)
    next_id: int = 1
    # discussion groups only: channel post id → id of its copy (the thread root) in this group
    roots: dict[int, int] = field(default_factory=dict)

    def tl(self) -> types.Channel:
        return types.Channel(
            id=self.id,
            title=self.title,
            photo=types.ChatPhotoEmpty(),
            date=BASE_DATE,
            broadcast=not self.megagroup or None,
            megagroup=self.megagroup or None,
            access_hash=self.access_hash,
            username=self.username,
        )


@dataclass
class FailRule:
    request_type: type
    make_error: Callable[[Any], BaseException]
    skip: int = 0  # let this many matching calls through first
    times: int = 1  # then fail this many (None: forever)
    where: Callable[[Any], bool] | None = None


class FakeTelegram:
    """The in-memory Telegram the fake client talks to."""

    def __init__(self) -> None:
        self.channels: dict[int, FakeChannel] = {}
        self.authorized = True
        self.offline = False  # connect() fails like an unreachable network
        self.login_code = "12345"
        self.password: str | None = None  # two-step verification password, when set
        self.rules: list[FailRule] = []
        self.requests: list[Any] = []
        self.clients: list[FakeTelegramClient] = []
        self.page_cap: int | None = None  # at most this many messages per history answer (more follow)
        self.empty_ids: set[tuple[int, int]] = set()  # (channel id, message id) served as MessageEmpty
        self.connects = 0  # connect() calls that reached the (fake) network
        self._hashes = itertools.count(9_000_001, 7919)

    # --- building ----------------------------------------------------------------------------------

    def add_channel(
        self,
        channel_id: int,
        title: str,
        username: str | None = None,
        *,
        discussion_id: int | None = None,
        private: bool = False,
    ) -> FakeChannel:
        channel = FakeChannel(channel_id, next(self._hashes), title, username, private=private)
        self.channels[channel_id] = channel
        if discussion_id is not None:
            group = FakeChannel(discussion_id, next(self._hashes), f"{title} chat", megagroup=True)
            self.channels[discussion_id] = group
            channel.linked_chat_id = discussion_id
        return channel

    def _date(self, channel: FakeChannel, message_id: int) -> datetime:
        return BASE_DATE + timedelta(hours=message_id)

    def post(
        self,
        channel: FakeChannel,
        text: str = "",
        *,
        date: datetime | None = None,
        media: Any = None,
        views: int | None = 100,
        forwards: int | None = 1,
        grouped_id: int | None = None,
        post_author: str | None = None,
        entities: list[Any] | None = None,
        reply_to: int | None = None,
    ) -> types.Message:
        message_id = channel.next_id
        channel.next_id += 1
        message = types.Message(
            id=message_id,
            peer_id=types.PeerChannel(channel.id),
            date=date or self._date(channel, message_id),
            message=text,
            post=True,
            media=media,
            views=views,
            forwards=forwards,
            grouped_id=grouped_id,
            post_author=post_author,
            entities=entities,
            reply_to=types.MessageReplyHeader(reply_to_msg_id=reply_to) if reply_to else None,
            replies=(
                types.MessageReplies(
                    replies=0, replies_pts=1, comments=True, channel_id=channel.linked_chat_id
                )
                if channel.linked_chat_id
                else None
            ),
        )
        channel.messages[message_id] = message
        if channel.linked_chat_id:
            group = self.channels[channel.linked_chat_id]
            root = self._group_message(
                group,
                text,
                date=message.date,
                fwd_from=types.MessageFwdHeader(
                    date=message.date,
                    from_id=types.PeerChannel(channel.id),
                    channel_post=message_id,
                    saved_from_peer=types.PeerChannel(channel.id),
                    saved_from_msg_id=message_id,
                ),
            )
            group.roots[message_id] = root.id
        return message

    def service(self, channel: FakeChannel, action: Any = None, **fields: Any) -> types.MessageService:
        """A service message (a pin by default) in a channel (or, with `post=None`, a group)."""
        message_id = channel.next_id
        channel.next_id += 1
        fields.setdefault("post", True)
        message = types.MessageService(
            id=message_id,
            peer_id=types.PeerChannel(channel.id),
            date=self._date(channel, message_id),
            action=action or types.MessageActionPinMessage(),
            **fields,
        )
        channel.messages[message_id] = message
        return message

    def _group_message(self, group: FakeChannel, text: str, **fields: Any) -> types.Message:
        message_id = group.next_id
        group.next_id += 1
        fields.setdefault("date", self._date(group, message_id))
        message = types.Message(id=message_id, peer_id=types.PeerChannel(group.id), message=text, **fields)
        group.messages[message_id] = message
        return message

    def comment(
        self,
        channel: FakeChannel,
        post_id: int,
        text: str,
        *,
        reply_to: int | None = None,
        user_id: int = 4242,
    ) -> types.Message:
        """A comment under a channel post (optionally replying to another comment), in the discussion group."""
        group = self.channels[channel.linked_chat_id]  # type: ignore[index]
        root = group.roots[post_id]
        header = types.MessageReplyHeader(
            reply_to_msg_id=reply_to or root, reply_to_top_id=root if reply_to else None
        )
        message = self._group_message(group, text, from_id=types.PeerUser(user_id), reply_to=header)
        post = channel.messages[post_id]
        replies = post.replies
        post.replies = types.MessageReplies(
            replies=replies.replies + 1,
            replies_pts=replies.replies_pts + 1,
            comments=True,
            channel_id=group.id,
            max_id=message.id,
        )
        return message

    def chatter(
        self, channel: FakeChannel, text: str, *, reply_to: int | None = None, user_id: int = 5151
    ) -> types.Message:
        """A message in the discussion group that is not a comment on a post (optionally a reply to one)."""
        group = self.channels[channel.linked_chat_id]  # type: ignore[index]
        header = types.MessageReplyHeader(reply_to_msg_id=reply_to) if reply_to else None
        return self._group_message(group, text, from_id=types.PeerUser(user_id), reply_to=header)

    def group_service(self, channel: FakeChannel) -> types.MessageService:
        """A service message (someone joined) in the discussion group."""
        group = self.channels[channel.linked_chat_id]  # type: ignore[index]
        joined = types.MessageActionChatAddUser(users=[9191])
        return self.service(group, joined, post=None, from_id=types.PeerUser(9191))

    def close_discussion_history(self, channel: FakeChannel) -> None:
        """The discussion group is private and this account has not joined it: its history cannot be read,
        its threads can (through the channel, as Telegram allows for comments)."""
        self.channels[channel.linked_chat_id].history_closed = True  # type: ignore[index]

    def edit(self, channel: FakeChannel, message_id: int, text: str, *, at: datetime | None = None) -> None:
        message = channel.messages[message_id]
        message.message = text
        message.edit_date = at or (message.date + timedelta(minutes=30))

    def ban_from_discussion(self, channel: FakeChannel) -> None:
        """This account is banned from the channel's discussion group: reading threads is CHANNEL_PRIVATE."""
        self.channels[channel.linked_chat_id].private = True  # type: ignore[index]

    def unlink_discussion(self, channel: FakeChannel) -> None:
        """The channel unlinked its discussion group; old posts still announce their threads."""
        channel.linked_chat_id = None

    def drop(self, request: Any = None) -> ConnectionError:
        """The connection breaks (use as a failure): every client is disconnected until it reconnects."""
        for client in self.clients:
            client._fake_connected = False
        return ConnectionError("Connection reset by peer")

    def break_thread(self, channel: FakeChannel, post_id: int) -> None:
        """Make the post's thread unreadable (its copy in the group was deleted): MSG_ID_INVALID."""
        group = self.channels[channel.linked_chat_id]  # type: ignore[index]
        group.roots.pop(post_id, None)

    def fail(
        self,
        request_type: type,
        make_error: Callable[[Any], BaseException],
        *,
        skip: int = 0,
        times: int | None = 1,
        where: Callable[[Any], bool] | None = None,
    ) -> None:
        """Fail matching requests: after `skip` successful ones, `times` in a row (None: forever)."""
        self.rules.append(
            FailRule(request_type, make_error, skip, times if times is not None else 10**9, where)
        )

    def calls(self, request_type: type) -> list[Any]:
        return [r for r in self.requests if isinstance(r, request_type)]

    # --- serving -----------------------------------------------------------------------------------

    def _channel_for(self, peer: Any, request: Any) -> FakeChannel:
        if isinstance(peer, types.InputPeerChannel | types.InputChannel):
            channel = self.channels.get(peer.channel_id)
            if channel is None or channel.access_hash != peer.access_hash:
                raise tg_errors.ChannelInvalidError(request)
            if channel.private:
                raise tg_errors.ChannelPrivateError(request)
            return channel
        raise tg_errors.PeerIdInvalidError(request)

    def answer(self, request: Any) -> Any:
        self.requests.append(copy.copy(request))  # Telethon mutates its paging request in place
        for rule in self.rules:
            if not isinstance(request, rule.request_type) or (rule.where and not rule.where(request)):
                continue
            if rule.skip > 0:
                rule.skip -= 1
                continue
            if rule.times > 0:
                rule.times -= 1
                raise rule.make_error(request)
        if isinstance(request, functions.help.GetConfigRequest):
            return None  # Telethon discards the config it asks for while connecting
        if isinstance(request, functions.updates.GetStateRequest):
            if not self.authorized:
                raise tg_errors.AuthKeyUnregisteredError(request)
            return types.updates.State(pts=1, qts=0, date=BASE_DATE, seq=0, unread_count=0)
        if not self.authorized:
            raise tg_errors.AuthKeyUnregisteredError(request)
        if isinstance(request, functions.users.GetUsersRequest):
            return [self.me()]
        if isinstance(request, functions.contacts.ResolveUsernameRequest):
            return self._resolve(request)
        if isinstance(request, functions.channels.GetChannelsRequest):
            return types.messages.Chats(chats=[self._channel_for(c, request).tl() for c in request.id])
        if isinstance(request, functions.channels.GetFullChannelRequest):
            return self._full(request)
        if isinstance(request, functions.messages.GetHistoryRequest):
            channel = self._readable(self._channel_for(request.peer, request), request)
            return self._slice(channel, list(channel.messages.values()), request)
        if isinstance(request, functions.channels.GetMessagesRequest):
            channel = self._readable(self._channel_for(request.channel, request), request)
            ids = [getattr(i, "id", i) for i in request.id]
            return types.messages.ChannelMessages(
                pts=1,
                count=len(ids),
                messages=[
                    channel.messages.get(i) or types.MessageEmpty(id=i, peer_id=types.PeerChannel(channel.id))
                    for i in ids
                ],
                topics=[],
                chats=[channel.tl()],
                users=[],
            )
        if isinstance(request, functions.messages.GetRepliesRequest):
            return self._replies(request)
        raise NotImplementedError(f"the fake does not serve {type(request).__name__}")

    @staticmethod
    def _readable(channel: FakeChannel, request: Any) -> FakeChannel:
        if channel.history_closed:
            raise tg_errors.ChannelPrivateError(request)
        return channel

    def me(self) -> types.User:
        return types.User(
            id=ME_ID, is_self=True, access_hash=55, first_name="Test", last_name="User", username="tester"
        )

    def _resolve(self, request: Any) -> Any:
        name = request.username
        if not utils.parse_username(name)[0] or len(name) < 4:
            raise tg_errors.UsernameInvalidError(request)
        for channel in self.channels.values():
            if channel.username and channel.username.lower() == name.lower():
                return types.contacts.ResolvedPeer(
                    peer=types.PeerChannel(channel.id), chats=[channel.tl()], users=[]
                )
        raise tg_errors.UsernameNotOccupiedError(request)

    def _full(self, request: Any) -> Any:
        channel = self._channel_for(request.channel, request)
        full = types.ChannelFull(
            id=channel.id,
            about="",
            read_inbox_max_id=0,
            read_outbox_max_id=0,
            unread_count=0,
            chat_photo=types.PhotoEmpty(id=0),
            notify_settings=types.PeerNotifySettings(),
            bot_info=[],
            pts=1,
            linked_chat_id=channel.linked_chat_id,
        )
        chats = [channel.tl()]
        if channel.linked_chat_id:
            chats.append(self.channels[channel.linked_chat_id].tl())
        return types.messages.ChatFull(full_chat=full, chats=chats, users=[])

    def _replies(self, request: Any) -> Any:
        channel = self._channel_for(request.peer, request)
        if not channel.linked_chat_id or request.msg_id not in channel.messages:
            raise tg_errors.MsgIdInvalidError(request)
        group = self.channels[channel.linked_chat_id]
        if group.private:
            raise tg_errors.ChannelPrivateError(request)
        root = group.roots.get(request.msg_id)
        if root is None:
            raise tg_errors.MsgIdInvalidError(request)
        thread = [
            m
            for m in group.messages.values()
            if isinstance(m.reply_to, types.MessageReplyHeader)
            and (m.reply_to.reply_to_top_id or m.reply_to.reply_to_msg_id) == root
        ]
        return self._slice(group, thread, request, extra_chats=[channel.tl()])

    def _slice(
        self, channel: FakeChannel, messages: list[Any], request: Any, extra_chats: list[Any] | None = None
    ) -> Any:
        """Telegram's history paging: newest first, from offset_id (or offset_date), shifted by add_offset."""
        ordered = sorted(messages, key=lambda m: m.id, reverse=True)
        if request.offset_id:
            index = next((i for i, m in enumerate(ordered) if m.id < request.offset_id), len(ordered))
        elif request.offset_date:
            index = next((i for i, m in enumerate(ordered) if m.date < request.offset_date), len(ordered))
        else:
            index = 0
        start = max(0, index + request.add_offset)
        end = max(0, index + request.add_offset + request.limit)
        page = ordered[start:end]
        if request.max_id:
            page = [m for m in page if m.id < request.max_id]
        if request.min_id:
            page = [m for m in page if m.id > request.min_id]
        if self.page_cap is not None and len(page) > self.page_cap:
            # "Buggy" channels answer fewer messages than asked although more follow (Telethon asks again).
            # Paging goes newest first, so the cut keeps the end nearest to the offset.
            page = page[-self.page_cap :] if request.add_offset < 0 else page[: self.page_cap]
        page = [
            types.MessageEmpty(id=m.id, peer_id=m.peer_id) if (channel.id, m.id) in self.empty_ids else m
            for m in page
        ]
        return types.messages.ChannelMessages(
            pts=1,
            count=len(ordered),
            messages=page,
            topics=[],
            chats=[channel.tl(), *(extra_chats or [])],
            users=[],
        )

    # --- clients -----------------------------------------------------------------------------------

    def client(self, session: Any = None) -> FakeTelegramClient:
        client = FakeTelegramClient(
            self,
            session if session is not None else StringSession(),
            12345,
            "0123456789abcdef0123456789abcdef",
            receive_updates=False,
            flood_sleep_threshold=0,
            raise_last_call_error=True,
        )
        self.clients.append(client)
        return client

    def factory(self) -> Callable[..., FakeTelegramClient]:
        """A drop-in for tg_parser.ingestion.client.client_factory (settings are still validated)."""
        from tg_parser.ingestion.client import _credentials, make_session

        def build(settings: Any, *, for_login: bool = False) -> FakeTelegramClient:
            _credentials(settings)
            session = make_session(settings, for_login=for_login)
            if isinstance(session, str):
                session = file_session(session)
            return self.client(session)

        return build


BUSY_TIMEOUT = 0.2  # seconds a session file waits for another writer (Telethon: sqlite3's default 5 s)


def file_session(path: str) -> SQLiteSession:
    """Telethon's own SQLite file session, waiting BUSY_TIMEOUT instead of 5 s for a locked file."""
    import sqlite3  # the fake stands in for Telethon, which talks to its session file directly

    session = SQLiteSession(path)
    session.close()
    session._conn = sqlite3.connect(session.filename, timeout=BUSY_TIMEOUT, check_same_thread=False)
    return session


class FakeTelegramClient(TelegramClient):
    """A real TelegramClient whose network round trip is answered by a FakeTelegram."""

    def __init__(self, world: FakeTelegram, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.world = world
        self._fake_connected = False
        self.sent_codes: list[str] = []

    async def connect(self) -> None:
        """What Telethon's connect does, minus the sockets: save the auth key to the session (a file
        session takes its write lock here), then send GetConfig, get_me and, if logged in, GetState."""
        if self._fake_connected:
            return
        if self.world.offline:
            raise ConnectionError("Connection to Telegram failed 2 time(s)")
        self.world.connects += 1
        if not self.session.server_address:
            self.session.set_dc(2, "149.154.167.51", 443)
        self.session.auth_key = self.session.auth_key  # Telethon stores the sender's key: a write
        self.session.save()
        self._fake_connected = True
        try:
            self.world.answer(functions.help.GetConfigRequest())
            me = await self.get_me()  # Telethon's own: an unauthorized session answers None
            if me:
                await self(functions.updates.GetStateRequest())
        except BaseException:
            self._fake_connected = False
            raise

    def is_connected(self) -> bool:
        return self._fake_connected

    async def disconnect(self) -> None:  # type: ignore[override]
        self._fake_connected = False
        self.session.close()  # as Telethon's: a file session commits and lets go of its file

    async def _call(
        self, sender: Any, request: Any, ordered: bool = False, flood_sleep_threshold: Any = None
    ) -> Any:
        if not self._fake_connected:
            raise ConnectionError("Cannot send requests while disconnected")
        await request.resolve(self, utils)
        result = roundtrip(self.world.answer(request))
        self.session.process_entities(result)
        return result

    # Login: the real methods run Telegram's SRP exchange; only the outcome matters here.
    async def send_code_request(self, phone: str, *, force_sms: bool = False) -> Any:  # type: ignore[override]
        if not phone.startswith("+") or not phone[1:].isdigit():
            raise tg_errors.PhoneNumberInvalidError(None)
        self.sent_codes.append(phone)
        return types.auth.SentCode(type=types.auth.SentCodeTypeApp(length=5), phone_code_hash="hash")

    async def sign_in(self, phone: Any = None, code: Any = None, *, password: Any = None, **_: Any) -> Any:  # type: ignore[override]
        world = self.world
        if password is not None:
            if password != world.password:
                raise tg_errors.PasswordHashInvalidError(None)
        else:
            if str(code) != world.login_code:
                raise tg_errors.PhoneCodeInvalidError(None)
            if world.password is not None:
                raise tg_errors.SessionPasswordNeededError(None)
        world.authorized = True
        self.session.set_dc(2, "149.154.167.51", 443)
        self.session.auth_key = AuthKey(os.urandom(256))
        return world.me()
