"""The one interactive step: log a Telegram account in and produce the session the other commands use.

Prompts are passed in (the CLI uses click's), so the flow is testable with a fake client.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from telethon import errors as tg_errors
from telethon.sessions import StringSession

from tg_parser.config import Settings
from tg_parser.errors import InvalidInput
from tg_parser.ingestion.client import TelegramGateway, session_file_path

CODE_ATTEMPTS = 3


@dataclass
class LoginResult:
    display_name: str
    already: bool
    string_session: str | None  # set when the session is a StringSession (print it for TELEGRAM_SESSION)
    session_file: str | None  # set when the session lives in TELEGRAM_SESSION_FILE


def _name(me: object) -> str:
    first = getattr(me, "first_name", None) or ""
    last = getattr(me, "last_name", None) or ""
    username = getattr(me, "username", None)
    name = " ".join(p for p in (first, last) if p) or "(no name)"
    return f"{name} (@{username})" if username else name


def login(
    settings: Settings,
    *,
    ask_phone: Callable[[], str],
    ask_code: Callable[[], str],
    ask_password: Callable[[], str],
    say: Callable[[str], None],
) -> LoginResult:
    gateway = TelegramGateway.from_settings(settings, for_login=True)
    with gateway:
        gateway.open(require_login=False)
        client = gateway.client
        already = gateway.is_authorized()
        if not already:
            phone = ask_phone().strip()
            try:
                gateway.run(client.send_code_request(phone))
            except tg_errors.PhoneNumberInvalidError:
                raise InvalidInput(
                    f"Telegram rejected the phone number {phone!r}",
                    "use the international format, e.g. +41791234567",
                ) from None
            for attempt in range(1, CODE_ATTEMPTS + 1):
                code = ask_code().strip()
                try:
                    gateway.run(client.sign_in(phone=phone, code=code))
                    break
                except tg_errors.SessionPasswordNeededError:
                    _two_factor(gateway, ask_password, say)
                    break
                except tg_errors.PhoneCodeInvalidError:
                    if attempt == CODE_ATTEMPTS:
                        raise InvalidInput(
                            "the login code was wrong three times", "run the command again"
                        ) from None
                    say("That code is not right; try again.")
                except tg_errors.PhoneCodeExpiredError:
                    raise InvalidInput(
                        "the login code expired", "run the command again for a new one"
                    ) from None
        me = gateway.run(client.get_me())
        session = client.session
        string = session.save() if isinstance(session, StringSession) else None
        file = None
        if settings.telegram_session_file is not None and string is None:
            file = str(session_file_path(settings.telegram_session_file))
        return LoginResult(_name(me), already, string, file)


def _two_factor(
    gateway: TelegramGateway, ask_password: Callable[[], str], say: Callable[[str], None]
) -> None:
    for attempt in range(1, CODE_ATTEMPTS + 1):
        try:
            gateway.run(gateway.client.sign_in(password=ask_password()))
            return
        except tg_errors.PasswordHashInvalidError:
            if attempt == CODE_ATTEMPTS:
                raise InvalidInput(
                    "the two-step verification password was wrong three times", "run the command again"
                ) from None
            say("That password is not right; try again.")
