"""How ingestion reacts to a failure: classified by exception *type*, never by message text.

* rate limits (FloodWait and its siblings) carry the number of seconds Telegram asked us to wait;
* retryable errors (network, timeouts, Telegram's internal errors) are retried with capped exponential
  backoff and jitter, then count as a failed attempt;
* permanent errors (private or banned channel, invalid username, unknown channel) put the source into
  `error` status with the reason, so cron stops hammering it until an operator resumes it;
* authorization errors (401 unauthorized: revoked session, unregistered key; and AUTH_KEY_DUPLICATED) stop
  the whole run: every other source would fail the same way. Telethon's `AuthKeyError` is the base of
  *every* 406 error (FILEREF_UPGRADE_NEEDED, ...): only its AUTH_KEY_DUPLICATED subclass means the session
  is dead, the others are permanent for the request at hand;
* `TelegramUnavailable` (a lost connection that could not be re-established) ends the run without
  charging the source: Telegram, not the source, failed;
* `MsgIdInvalidError` while reading a post's comments means that post has no discussion thread.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import Enum

from telethon import errors as tg_errors

from tg_parser.errors import EXIT_RATE_LIMITED, ConfigError, LockHeld, TgParserError


class ErrorKind(Enum):
    RATE_LIMIT = "rate_limit"
    RETRYABLE = "retryable"
    PERMANENT = "permanent"
    AUTH = "auth"
    NO_THREAD = "no_thread"
    UNAVAILABLE = "unavailable"
    UNEXPECTED = "unexpected"


@dataclass(frozen=True)
class Classified:
    kind: ErrorKind
    seconds: int = 0  # for RATE_LIMIT: how long Telegram asked us to wait


# --- our own errors --------------------------------------------------------------------------------


class TelegramNotConfigured(ConfigError):
    """TELEGRAM_API_ID / TELEGRAM_API_HASH / a session are missing or unusable."""


class NotLoggedIn(ConfigError):
    """The session exists but is not authorized (never logged in, or revoked)."""


class ChannelNotFound(TgParserError):
    """Telegram does not know the channel (or this account cannot see it). Permanent for a source."""


class TelegramUnavailable(TgParserError):
    """Telegram could not be reached at all (network down, DNS, firewall)."""


class ConnectionLost(TelegramUnavailable):
    """The connection dropped during a run and could not be re-established (bounded tries)."""


class TelegramSessionBusy(LockHeld):
    """Another process is using the Telegram session (the session lock, or its write-locked file)."""


class SourceLocked(LockHeld):
    """Another process is ingesting this source right now."""


class RateLimited(TgParserError):
    """Telegram asked for a wait longer than we are willing to sleep inline."""

    exit_code = EXIT_RATE_LIMITED

    def __init__(self, seconds: int, message: str | None = None) -> None:
        super().__init__(message or f"Telegram asked to wait {seconds}s (FloodWait)")
        self.seconds = seconds


# --- classification --------------------------------------------------------------------------------

_FLOOD_TYPES: tuple[type[BaseException], ...] = (
    tg_errors.FloodWaitError,
    tg_errors.FloodPremiumWaitError,
    tg_errors.SlowModeWaitError,
    tg_errors.FloodTestPhoneWaitError,
)

_RETRYABLE_TYPES: tuple[type[BaseException], ...] = (
    tg_errors.ServerError,  # 500 family: RpcCallFail, RpcMcgetFail, InterdcCall*, ...
    tg_errors.TimedOutError,
    ConnectionError,
    TimeoutError,
    asyncio.TimeoutError,
    OSError,  # sockets, DNS
    tg_errors.FloodError,  # a 420 without a wait time: back off and retry
)

_AUTH_TYPES: tuple[type[BaseException], ...] = (
    tg_errors.UnauthorizedError,  # AuthKeyUnregistered, SessionRevoked, UserDeactivated, ...
    tg_errors.AuthKeyDuplicatedError,  # the one 406 that means the session is dead
    tg_errors.AuthKeyNotFound,
    NotLoggedIn,
)

_PERMANENT_TYPES: tuple[type[BaseException], ...] = (
    tg_errors.ChannelPrivateError,
    tg_errors.ChannelInvalidError,
    tg_errors.ChannelBannedError,
    tg_errors.ChannelPublicGroupNaError,
    tg_errors.ChatForbiddenError,
    tg_errors.UsernameInvalidError,
    tg_errors.UsernameNotOccupiedError,
    tg_errors.PeerIdInvalidError,
    ChannelNotFound,
    tg_errors.BadRequestError,  # anything else Telegram calls a bad request will not improve by retrying
    tg_errors.ForbiddenError,
    tg_errors.NotFoundError,
    tg_errors.AuthKeyError,  # every other 406 (FILEREF_UPGRADE_NEEDED, ...): retrying will not help
)


def classify(exc: BaseException) -> Classified:
    """Which kind of failure `exc` is. Order matters: subclasses are checked before their bases."""
    if isinstance(exc, _FLOOD_TYPES):
        return Classified(ErrorKind.RATE_LIMIT, max(int(getattr(exc, "seconds", 0) or 0), 1))
    if isinstance(exc, tg_errors.MsgIdInvalidError):
        return Classified(ErrorKind.NO_THREAD)
    if isinstance(exc, tg_errors.InvalidBufferError):
        # The server answers a transport-level -404 when it does not know our auth key.
        code = getattr(exc, "code", None)
        return Classified(ErrorKind.AUTH if code is not None and abs(code) == 404 else ErrorKind.RETRYABLE)
    if isinstance(exc, _AUTH_TYPES):
        return Classified(ErrorKind.AUTH)
    if isinstance(exc, TelegramUnavailable):
        return Classified(ErrorKind.UNAVAILABLE)
    if isinstance(exc, _PERMANENT_TYPES):
        return Classified(ErrorKind.PERMANENT)
    if isinstance(exc, _RETRYABLE_TYPES):
        return Classified(ErrorKind.RETRYABLE)
    return Classified(ErrorKind.UNEXPECTED)


def describe(exc: BaseException) -> str:
    """One line for `last_error` and the attempts journal: the exception type and its first line (our own
    errors with their hint: what to do belongs next to what went wrong)."""
    text = " ".join((exc.one_line() if isinstance(exc, TgParserError) else str(exc)).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
