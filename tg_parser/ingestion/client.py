"""The Telegram boundary: a thin, synchronous adapter over Telethon's `TelegramClient`.

Everything else in tg-parser talks to Telegram through `TelegramGateway`; nothing else imports Telethon's
client. The gateway owns a private asyncio loop and runs each call to completion on it, so the ingestion
code (and the database layer it drives) stays plain synchronous Python.

The client is built from settings: `TELEGRAM_API_ID`, `TELEGRAM_API_HASH` and either `TELEGRAM_SESSION`
(a StringSession, for servers) or `TELEGRAM_SESSION_FILE` (a Telethon session file). Batch runs use
`receive_updates=False` (no update stream) and `flood_sleep_threshold=0`, so every FloodWait reaches our
own policy instead of being slept invisibly inside Telethon; `raise_last_call_error=True` makes Telethon
re-raise the real error after its internal retries rather than a generic ValueError.

One session, one user at a time: `open(db=...)` first takes the session lock (`Database.hold_lock`, a
PostgreSQL advisory lock shared by every host, or a file lock next to the SQLite stores) named after a
digest of the session's auth key. A second tg-parser process on the same session (an overlapping cron
run, `sources add` during a run, another host with the same TELEGRAM_SESSION) stops at once with exit 4
instead of meeting Telethon's write-locked session file or making Telegram revoke a key used twice
(AUTH_KEY_DUPLICATED).

Errors while connecting are classified like those of any other call (rate limit, session dead, network),
and a client that lost its connection (Telethon gives up after its own reconnect tries and then fails
every call with "Cannot send requests while disconnected") is reconnected before the next call, a bounded
number of times with back-off; after that the gateway raises `ConnectionLost`, which ends the run as
"Telegram unavailable" without charging a failure to every remaining source.

Tests replace `client_factory` with a fake `TelegramClient` subclass (tests/support/fake_telegram.py)
that answers requests with real Telethon types; the gateway code runs unchanged.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from telethon import TelegramClient, utils
from telethon import errors as tg_errors
from telethon.sessions import StringSession
from telethon.tl import functions, types

from tg_parser.backoff import Backoff
from tg_parser.config import Settings
from tg_parser.db.locks import HeldLock, LockBusy
from tg_parser.domain.channels import ChannelRef
from tg_parser.errors import TgParserError
from tg_parser.ingestion.errors import (
    ChannelNotFound,
    ConnectionLost,
    ErrorKind,
    NotLoggedIn,
    RateLimited,
    TelegramNotConfigured,
    TelegramSessionBusy,
    TelegramUnavailable,
    classify,
    describe,
)

if TYPE_CHECKING:
    from tg_parser.db.base import Database

T = TypeVar("T")

PAGE_SIZE = 100  # Telegram returns at most 100 messages per history request

LOGIN_HINT = "run 'tg-parser telegram login' (see docs/USER_GUIDE.md, 'Telegram login')"
SESSION_HINT = (
    "the next scheduled run goes ahead once it has finished; use one session per host "
    "(docs/USER_GUIDE.md, 'One Telegram session, one user at a time')"
)
RECONNECT_ATTEMPTS = 3  # connects tried (at open, and after a lost connection) before giving up
RECONNECT_BACKOFF = Backoff(base=2.0, cap=30.0)


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

# How the gateway waits between connect tries; tests replace it so nothing really waits.
sleep: Callable[[float], None] = time.sleep


# --- the session lock and the session file -----------------------------------------------------------


def session_lock_name(session: Any) -> str | None:
    """The lock that stands for one Telegram session, or None for a fresh, empty string session.

    Named after a digest of the auth key (never the key): a string session and a file session holding the
    same key are the same session to Telegram. A file session not logged in yet is named by its path.
    """
    key = getattr(getattr(session, "auth_key", None), "key", None)
    if key:
        return "telegram-session:" + hashlib.blake2b(key, digest_size=10, person=b"tg-parser").hexdigest()
    filename = getattr(session, "filename", ":memory:")
    if filename and filename != ":memory:":
        return f"telegram-session-file:{Path(filename).resolve()}"
    return None


def _session_file_error(exc: BaseException, filename: Any) -> TgParserError | None:
    """Telethon's SQLite session file failed (not Telegram): busy → exit 4, unreadable → exit 3.

    Telethon keeps a file session write-locked while connected and raises the sqlite3 error as is; the
    driver is db/'s business, so it is recognised by its module and SQLite's own error name.
    """
    if type(exc).__module__ != "sqlite3":
        return None
    filename = filename or "(unnamed)"
    if getattr(exc, "sqlite_errorname", None) in ("SQLITE_BUSY", "SQLITE_LOCKED"):
        return TelegramSessionBusy(
            f"the Telegram session file {filename} is in use by another process (it stays write-locked "
            "while that process is connected)",
            SESSION_HINT,
        )
    return TelegramNotConfigured(
        f"the Telegram session file {filename} cannot be used: {describe(exc)}", LOGIN_HINT
    )


def connect_failure(exc: BaseException) -> TgParserError | None:
    """What a failed connect means for the whole command; None when it is worth trying again."""
    kind = classify(exc).kind
    if kind is ErrorKind.RATE_LIMIT:
        seconds = classify(exc).seconds
        return RateLimited(
            seconds,
            f"Telegram asked to wait {seconds}s while connecting ({type(exc).__name__}); nothing was fetched",
        )
    if isinstance(exc, tg_errors.AuthKeyDuplicatedError):
        return NotLoggedIn(
            "Telegram revoked the session: it was used from two places at once (AUTH_KEY_DUPLICATED)",
            "run 'tg-parser telegram login' again and use each session on one host only",
        )
    if kind is ErrorKind.AUTH:
        return NotLoggedIn(f"Telegram rejected the session: {describe(exc)}", LOGIN_HINT)
    if kind is ErrorKind.UNAVAILABLE and isinstance(exc, TgParserError):
        return exc
    if kind in (ErrorKind.RETRYABLE, ErrorKind.UNEXPECTED):
        return None  # retried, or (a bug) re-raised as it is
    return TelegramUnavailable(
        f"Telegram refused the connection: {describe(exc)}", "check the account and the API credentials"
    )


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

    def __init__(
        self,
        client: TelegramClient,
        *,
        reconnect_attempts: int = RECONNECT_ATTEMPTS,
        backoff: Backoff = RECONNECT_BACKOFF,
        pause: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.reconnect_attempts = max(1, reconnect_attempts)
        self.backoff = backoff
        self.sleep: Callable[[float], None] = pause or (lambda seconds: sleep(seconds))
        self.rng = rng or random.Random()
        self.reconnects = 0  # reconnects after a lost connection (not counting the first connect)
        self._loop = asyncio.new_event_loop()
        self._open = False
        self._locks = ExitStack()
        self._held: list[HeldLock] = []  # the session lock, once taken

    @classmethod
    def from_settings(cls, settings: Settings, *, for_login: bool = False) -> TelegramGateway:
        try:
            client = client_factory(settings, for_login=for_login)
        except Exception as exc:  # Telethon opens a session file while building the client
            path = settings.telegram_session_file
            failure = _session_file_error(exc, session_file_path(path) if path else None)
            if failure is None:
                raise
            raise failure from None
        return cls(client)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            self._ensure_connected()
        except BaseException:
            coro.close()
            raise
        try:
            result = self._loop.run_until_complete(coro)
        except Exception:
            self._ensure_connected()  # the call dropped the connection: back now, or ConnectionLost
            raise
        if isinstance(result, Page) and result.error is not None:
            try:
                self._ensure_connected()
            except ConnectionLost as lost:
                result.error = lost  # the messages read before the drop are kept
        return result

    # --- lifecycle -------------------------------------------------------------------------------

    def open(self, *, require_login: bool = True, db: Database | None = None) -> TelegramGateway:
        """Take the session lock (with `db`), connect, and with `require_login` fail fast (ConfigError)
        when the session is not authorized. Every failure is one classified TgParserError."""
        try:
            if db is not None:
                self._lock_session(db)
            self._connect(at_open=True)
            self._open = True
            if require_login and not self.is_authorized():
                raise NotLoggedIn("the Telegram session is not logged in", LOGIN_HINT)
        except BaseException:
            self.close()
            raise
        return self

    def _lock_session(self, db: Database) -> None:
        name = session_lock_name(self.client.session)
        if name is None:
            return
        try:
            self._held.append(self._locks.enter_context(db.hold_lock(name)))
        except LockBusy as busy:
            if busy.name != name:
                raise
            who = f" ({busy.holder})" if busy.holder else ""
            raise TelegramSessionBusy(
                f"another tg-parser run is using the Telegram session{who}", SESSION_HINT
            ) from None

    def _connect(self, *, at_open: bool) -> None:
        """Connect, retrying network failures a bounded number of times with back-off."""
        last: BaseException | None = None
        for attempt in range(self.reconnect_attempts):
            if attempt > 0:
                self.sleep(self.backoff.delay(attempt - 1, self.rng))
            try:
                self._loop.run_until_complete(self.client.connect())
                return
            except Exception as exc:
                failure = _session_file_error(
                    exc, getattr(self.client.session, "filename", None)
                ) or connect_failure(exc)
                if failure is not None:
                    raise failure from None
                if classify(exc).kind is ErrorKind.UNEXPECTED:
                    raise
                last = exc
        assert last is not None
        if at_open:
            raise TelegramUnavailable(
                f"cannot connect to Telegram: {describe(last)}",
                "check the network (and a proxy, if this host needs one), then run again",
            )
        raise ConnectionLost(
            f"lost the connection to Telegram and could not reconnect ({self.reconnect_attempts} "
            f"tries; last: {describe(last)})",
            "check the network; the next run resumes every source from its stored cursor",
        )

    def _ensure_connected(self) -> None:
        """Reconnect a client that lost its connection (Telethon gave up its own reconnect tries)."""
        if not self._open or self.client.is_connected():
            return
        self.reconnects += 1
        self._connect(at_open=False)

    def check_locks(self) -> None:
        """Raise `LockLost` if the session lock taken at `open(db=...)` is no longer held (its PostgreSQL
        connection broke): another run may be using the session now. No lock taken: nothing to check."""
        for held in self._held:
            held.check()

    def is_authorized(self) -> bool:
        return bool(self._run(self.client.is_user_authorized()))

    def close(self) -> None:
        if self._loop.is_closed():
            self._locks.close()
            self._held.clear()
            return
        try:
            if self._open or self.client.is_connected():

                async def _disconnect() -> None:
                    result = self.client.disconnect()
                    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                        await result

                self._loop.run_until_complete(_disconnect())
            else:
                self.client.session.close()  # a file session opened but never connected lets go too
        finally:
            self._open = False
            self._loop.close()
            self._locks.close()  # the session lock goes last: the session file is closed by now
            self._held.clear()

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
            try:
                entity = self._run(self.client.get_entity(target))
            except tg_errors.ChannelInvalidError:
                if not isinstance(target, types.InputPeerChannel):
                    raise
                # The stored access hash is stale (it belongs to another account, or the channel changed):
                # this session may still know the channel; if not, only a username can reach it.
                entity = self._run(self.client.get_entity(types.PeerChannel(int(ref.channel_id or 0))))
        except ValueError:
            # Telethon's "cannot find any entity" (and its wrapping of USERNAME_NOT_OCCUPIED).
            if ref.username:
                raise ChannelNotFound(
                    f"Telegram does not know {shown}", "check the spelling of the username"
                ) from None
            stale = " (the stored access hash is no longer valid for this account)" if access_hash else ""
            raise ChannelNotFound(
                f"Telegram does not know {shown}{stale}",
                "this session has never seen that channel: add it by @username or t.me link instead",
            ) from None
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

    def discussion_group(self, peer: types.InputPeerChannel) -> ChannelInfo | None:
        """The channel's linked discussion group (one GetFullChannel), or None when comments are off.

        A group this account may not see at all comes back with `access_hash` None.
        """
        full = self._run(self.client(functions.channels.GetFullChannelRequest(channel=peer)))
        linked = getattr(full.full_chat, "linked_chat_id", None)
        if not linked:
            return None
        for chat in full.chats:
            if chat.id == linked and isinstance(chat, types.Channel) and not chat.min:
                return channel_info(chat)
        return ChannelInfo(channel_id=int(linked), access_hash=None, username=None, title=None)

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
        self,
        peer: types.InputPeerChannel,
        *,
        post_id: int,
        after_id: int,
        limit: int = PAGE_SIZE,
        up_to_id: int | None = None,
    ) -> Page:
        """Comments on a channel post (read from its discussion group), after_id < id <= up_to_id (no
        upper bound when None), oldest first.

        Ids are those of the discussion group. A post without a discussion thread raises
        MsgIdInvalidError (returned in `Page.error`).
        """
        kwargs: dict[str, Any] = {"limit": limit, "reverse": True, "reply_to": post_id, "wait_time": 0}
        if after_id > 0:
            kwargs["min_id"] = after_id
        if up_to_id is not None:
            kwargs["max_id"] = up_to_id + 1
        return self._run(_drain(self.client.iter_messages(peer, **kwargs)))

    def newest_id(self, peer: types.InputPeerChannel) -> int:
        """The id of the newest message of a chat (0 when it is empty): one request."""
        page = self._run(_drain(self.client.iter_messages(peer, limit=1, wait_time=0)))
        if page.error is not None:
            raise page.error
        return max((m.id for m in page.messages), default=0)

    def messages_by_id(self, peer: types.InputPeerChannel, ids: list[int]) -> list[Any]:
        """The messages with these ids (one request per 100; a deleted one is left out)."""
        found = self._run(self.client.get_messages(peer, ids=list(ids)))
        return [m for m in found if m is not None]


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
