"""Resolve what an operator typed (`@name`, a t.me link, a numeric id) through Telegram, for `sources add`.

Every failure is one clear line with its own exit code: a bad username is bad input (2), a channel
Telegram refuses is a failure (1), a dead session is configuration (3), a session in use by a run is
locked (4), a FloodWait is a rate limit (5).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from telethon import errors as tg_errors

from tg_parser.config import Settings
from tg_parser.domain.channels import ChannelRef
from tg_parser.errors import InvalidInput, TgParserError
from tg_parser.ingestion.client import LOGIN_HINT, ChannelInfo, TelegramGateway, telegram_configured
from tg_parser.ingestion.errors import (
    ChannelNotFound,
    ErrorKind,
    NotLoggedIn,
    RateLimited,
    TelegramUnavailable,
    classify,
    describe,
)

if TYPE_CHECKING:
    from tg_parser.db.base import Database


def resolve_channel(
    settings: Settings, ref: ChannelRef, access_hash: int | None = None, *, db: Database | None = None
) -> ChannelInfo | None:
    """The channel's numeric id, username, title and access hash; None when Telegram is not configured
    (then `sources add` stores what was typed and ingestion resolves it on its first run).

    A numeric id needs an access hash: pass the one stored for that channel, if any (a string session
    keeps no entity cache between runs). With `db`, the session lock is held while Telegram is asked."""
    if not telegram_configured(settings):
        return None
    try:
        with TelegramGateway.from_settings(settings) as gateway:
            gateway.open(db=db)
            return gateway.resolve(ref, access_hash=access_hash)
    except TgParserError:
        raise
    except Exception as exc:
        failure = resolve_failure(exc, ref)
        if failure is None:
            raise
        raise failure from None


def resolve_failure(exc: BaseException, ref: ChannelRef) -> TgParserError | None:
    """One line for an error Telegram gave while resolving `ref`; None for an unexpected one (a bug)."""
    shown = f"@{ref.username}" if ref.username else f"channel id {ref.channel_id}"
    classified = classify(exc)
    if classified.kind is ErrorKind.RATE_LIMIT:
        return RateLimited(
            classified.seconds,
            f"Telegram asked to wait {classified.seconds}s before resolving {shown} "
            f"({type(exc).__name__}); add the source again after that",
        )
    if isinstance(exc, tg_errors.UsernameInvalidError):
        return InvalidInput(
            f"{shown} is not a valid Telegram username",
            "a username is 5-32 letters, digits and underscores; or give a t.me link",
        )
    if classified.kind is ErrorKind.AUTH:
        return NotLoggedIn(f"Telegram rejected the session: {describe(exc)}", LOGIN_HINT)
    if isinstance(exc, tg_errors.ChannelInvalidError | tg_errors.ChannelPrivateError):
        return ChannelNotFound(
            f"Telegram refused {shown}: {describe(exc)}",
            "join the channel with this account, or add it by @username or t.me link",
        )
    if classified.kind is ErrorKind.PERMANENT:
        return ChannelNotFound(f"Telegram refused {shown}: {describe(exc)}", "check the channel")
    if classified.kind in (ErrorKind.RETRYABLE, ErrorKind.UNAVAILABLE):
        return TelegramUnavailable(
            f"Telegram did not answer while resolving {shown}: {describe(exc)}", "try again later"
        )
    return None
