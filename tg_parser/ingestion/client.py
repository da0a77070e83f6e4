"""The Telegram boundary: a thin, synchronous adapter over Telethon's `TelegramClient`.

Everything else in tg-parser talks to Telegram through `TelegramGateway`; nothing else imports Telethon's
client. The gateway owns a private asyncio loop and runs each call to completion on it, so the ingestion
code (and the database layer it drives) stays plain synchronous Python.

The client is built from settings: `TELEGRAM_API_ID`, `TELEGRAM_API_HASH` and either `TELEGRAM_SESSION`
(a StringSession, for servers) or `TELEGRAM_SESSION_FILE` (a Telethon session file). Batch runs use
`receive_updates=False` (no update stream) and `flood_sleep_threshold=0`, so every FloodWait reaches our
own policy instead of being slept invisibly inside Telethon; `raise_last_call_error=True` makes Telethon
re-raise the real error after its internal retries rather than a generic ValueError.

Tests replace `client_factory` with a fake `TelegramClient` subclass (tests/support/fake_telegram.py)
that answers requests with real Telethon types; the gateway code runs unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from telethon import TelegramClient, utils
from telethon.sessions import StringSession
from telethon.tl import functions, types

from tg_parser.config import Settings
from tg_parser.domain.channels import ChannelRef
from tg_parser.ingestion.errors import (
    ChannelNotFound,
    NotLoggedIn,
    TelegramNotConfigured,
    TelegramUnavailable,
)

T = TypeVar("T")

PAGE_SIZE = 100  # Telegram returns at most 100 messages per history request

LOGIN_HINT = "run 'tg-parser telegram login' (see docs/USER_GUIDE.md, 'Telegram login')"


@dataclass(frozen=True)
class ChannelInfo:
    """What Telegram says about a channel: enough to reach it again from a fresh string session."""

    channel_id: int
    access_hash: int | None
    username: str | None
    title: str | None
    broadcast: bool = True
    megagroup: bool = False


@dataclass
class Page:
    """Messages returned by one paging call, oldest first, and the error that cut it short (if any).

    Telethon may issue a second request inside one call (it cannot trust a short page to be the last);
    when that request fails, the messages of the first are still here, so nothing fetched is thrown away
    and paging resumes from the last message kept.
    """

    messages: list[Any] = field(default_factory=list)
    error: BaseException | None = None


# --- building the client ---------------------------------------------------------------------------


def session_file_path(path: Path) -> Path:
    """Where Telethon keeps a file session: it appends `.session` unless the name already ends so."""
    return path if path.suffix == ".session" else path.with_name(path.name + ".session")


def _credentials(settings: Settings) -> tuple[int, str]:
    if settings.telegram_api_id is None or settings.telegram_api_hash is None:
        missing = [
            name
            for name, value in (
                ("TELEGRAM_API_ID", settings.telegram_api_id),
                ("TELEGRAM_API_HASH", settings.telegram_api_hash),
            )
            if value is None
        ]
        raise TelegramNotConfigured(
            f"{' and '.join(missing)} not set",
            "create an application at https://my.telegram.org, put its api_id and api_hash in .env, "
            "then " + LOGIN_HINT,
        )
    return settings.telegram_api_id, settings.telegram_api_hash.get_secret_value()


def telegram_configured(settings: Settings) -> bool:
    """True when API credentials and a session are configured (so `sources add` can ask Telegram)."""
    if settings.telegram_api_id is None or settings.telegram_api_hash is None:
        return False
    if settings.telegram_session is not None and settings.telegram_session.get_secret_value():
        return True
    return (
        settings.telegram_session_file is not None
        and session_file_path(settings.telegram_session_file).exists()
    )


def make_session(settings: Settings, *, for_login: bool = False) -> StringSession | str:
    """The Telethon session named by the settings.

    Unattended commands refuse to create a session: a missing session file would otherwise be created
    empty and the command would fail later with a confusing "not authorized".
    """
    if settings.telegram_session is not None and settings.telegram_session.get_secret_value():
        try:
            return StringSession(settings.telegram_session.get_secret_value().strip())
        except Exception as exc:  # ValueError, binascii.Error, struct.error: a damaged or foreign string
            raise TelegramNotConfigured(
                "TELEGRAM_SESSION is not a valid Telethon string session", LOGIN_HINT
            ) from exc
    if settings.telegram_session_file is not None:
        path = settings.telegram_session_file
        if not for_login and not session_file_path(path).exists():
            raise TelegramNotConfigured(
                f"TELEGRAM_SESSION_FILE points to {session_file_path(path)}, which does not exist",
                LOGIN_HINT,
            )
        return str(path)
    if for_login:
        return StringSession()
    raise TelegramNotConfigured(
        "no Telegram session configured (TELEGRAM_SESSION or TELEGRAM_SESSION_FILE)", LOGIN_HINT
    )


def build_client(settings: Settings, *, for_login: bool = False) -> TelegramClient:
    """A real TelegramClient configured for unattended batch work (nothing is sent until connect)."""
    api_id, api_hash = _credentials(settings)
    session = make_session(settings, for_login=for_login)
    return TelegramClient(
        session,
        api_id,
        api_hash,
        receive_updates=False,
        flood_sleep_threshold=0,
        raise_last_call_error=True,
        request_retries=2,
        connection_retries=2,
        retry_delay=1,
        timeout=20,
        entity_cache_limit=1000,
    )


# Replaced by tests with a factory returning a fake client. Signature: (settings, for_login) -> client.
client_factory: Callable[..., TelegramClient] = build_client


# --- the gateway -----------------------------------------------------------------------------------


async def _drain(iterator: AsyncIterator[Any]) -> Page:
    page = Page()
    try:
        async for message in iterator:
            page.messages.append(message)
    except Exception as exc:  # handed to the caller, which classifies it by type
        page.error = exc
    return page


class TelegramGateway:
    """Synchronous facade over one TelegramClient running on a private event loop."""

    def __init__(self, client: TelegramClient) -> None:
        self.client = client
        self._loop = asyncio.new_event_loop()
        self._open = False

    @classmethod
    def from_settings(cls, settings: Settings, *, for_login: bool = False) -> TelegramGateway:
        return cls(client_factory(settings, for_login=for_login))

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(coro)

    # --- lifecycle -------------------------------------------------------------------------------

    def open(self, *, require_login: bool = True) -> TelegramGateway:
        """Connect; with `require_login`, fail fast (ConfigError) when the session is not authorized."""
        try:
            self._run(self.client.connect())
        except (TimeoutError, OSError) as exc:
            self.close()
            raise TelegramUnavailable(
                f"cannot connect to Telegram: {type(exc).__name__}: {exc}",
                "check the network (and a proxy, if this host needs one), then run again",
            ) from None
        self._open = True
        if require_login and not self.is_authorized():
            self.close()
            raise NotLoggedIn("the Telegram session is not logged in", LOGIN_HINT)
        return self

    def is_authorized(self) -> bool:
        return bool(self._run(self.client.is_user_authorized()))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            if self._open:

                async def _disconnect() -> None:
                    result = self.client.disconnect()
                    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                        await result

                self._run(_disconnect())
        finally:
            self._open = False
            self._loop.close()

    def __enter__(self) -> TelegramGateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine of the client on the gateway's loop (login uses this)."""
        return self._run(coro)

    # --- channels --------------------------------------------------------------------------------

    def resolve(self, ref: ChannelRef, access_hash: int | None = None) -> ChannelInfo:
        """@username / numeric id → the channel's id, access hash, username and title.

        A numeric id can only be resolved with its access hash: given (from a stored source), or cached
        by this session because it has seen the channel. A username always can.
        """
        target: Any
        if ref.username:
            target = ref.username
        elif access_hash is not None:
            target = types.InputPeerChannel(channel_id=int(ref.channel_id or 0), access_hash=access_hash)
        else:
            target = types.PeerChannel(int(ref.channel_id or 0))
        shown = f"@{ref.username}" if ref.username else f"channel id {ref.channel_id}"
        try:
            entity = self._run(self.client.get_entity(target))
        except ValueError:
            # Telethon's "cannot find any entity" (and its wrapping of USERNAME_NOT_OCCUPIED).
            hint = (
                "check the spelling of the username"
                if ref.username
                else "this session has never seen that channel: add it by @username or t.me link instead"
            )
            raise ChannelNotFound(f"Telegram does not know {shown}", hint) from None
        if isinstance(entity, types.ChannelForbidden):
            raise ChannelNotFound(f"{shown} is private or this account was banned from it", "join it first")
        if not isinstance(entity, types.Channel):
            raise ChannelNotFound(
                f"{shown} is a {type(entity).__name__.lower()}, not a channel", "give a channel's username"
            )
        return channel_info(entity)

    @staticmethod
    def input_peer(channel_id: int, access_hash: int) -> types.InputPeerChannel:
        return types.InputPeerChannel(channel_id=channel_id, access_hash=access_hash)

    def linked_discussion(self, peer: types.InputPeerChannel) -> int | None:
        """The id of the channel's linked discussion group, or None when comments are off."""
        full = self._run(self.client(functions.channels.GetFullChannelRequest(channel=peer)))
        linked = getattr(full.full_chat, "linked_chat_id", None)
        return int(linked) if linked else None

    # --- messages ----------------------------------------------------------------------------------

    def history_after(
        self,
        peer: types.InputPeerChannel,
        *,
        after_id: int,
        since: datetime | None = None,
        limit: int = PAGE_SIZE,
    ) -> Page:
        """Up to `limit` messages with id > after_id, oldest first (from `since` when after_id is 0)."""
        kwargs: dict[str, Any] = {"limit": limit, "reverse": True, "wait_time": 0}
        if after_id > 0:
            kwargs["min_id"] = after_id
        elif since is not None:
            kwargs["offset_date"] = since
        return self._run(_drain(self.client.iter_messages(peer, **kwargs)))

    def history_recent(self, peer: types.InputPeerChannel, *, up_to_id: int, limit: int = PAGE_SIZE) -> Page:
        """The `limit` newest messages with id <= up_to_id, oldest first (to re-read recent posts)."""
        page = self._run(
            _drain(self.client.iter_messages(peer, limit=limit, max_id=up_to_id + 1, wait_time=0))
        )
        page.messages.reverse()
        return page

    def replies_after(
        self, peer: types.InputPeerChannel, *, post_id: int, after_id: int, limit: int = PAGE_SIZE
    ) -> Page:
        """Comments on a channel post (read from its discussion group), id > after_id, oldest first.

        Ids are those of the discussion group. A post without a discussion thread raises
        MsgIdInvalidError (returned in `Page.error`).
        """
        kwargs: dict[str, Any] = {"limit": limit, "reverse": True, "reply_to": post_id, "wait_time": 0}
        if after_id > 0:
            kwargs["min_id"] = after_id
        return self._run(_drain(self.client.iter_messages(peer, **kwargs)))


def channel_info(entity: types.Channel) -> ChannelInfo:
    username = entity.username
    if not username and getattr(entity, "usernames", None):
        active = [u.username for u in entity.usernames if getattr(u, "active", False)]
        username = active[0] if active else None
    return ChannelInfo(
        channel_id=int(utils.get_peer_id(entity, add_mark=False)),
        access_hash=entity.access_hash,
        username=username,
        title=entity.title,
        broadcast=bool(entity.broadcast),
        megagroup=bool(entity.megagroup),
    )
