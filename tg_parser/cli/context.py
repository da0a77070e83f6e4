"""What every command shares: settings (loaded once, validated), logging, and the open database."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, TypeVar

import click

from tg_parser.config import Settings, load_settings, requested_log_format
from tg_parser.db.base import Database
from tg_parser.errors import InvalidInput
from tg_parser.extensions import announce_build_warnings
from tg_parser.logging import register_secrets, setup_logging


@dataclass
class AppContext:
    debug: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = None
    _db: Database | None = None
    run_id: str | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(**self.overrides)
            register_secrets(self._settings.secrets())
            level = "DEBUG" if self.debug else self._settings.log_level
            self.run_id = setup_logging(level, self._settings.log_format)
            announce_build_warnings()  # once, after an install that could not compile the C fast paths
        return self._settings

    @property
    def log_format(self) -> str:
        """LOG_FORMAT of this command: from its settings once loaded, else as the environment asks."""
        return self._settings.log_format if self._settings is not None else requested_log_format()

    def database(self, *, check_migrations: bool = True) -> Database:
        """The configured database, opened on first use and closed when the command ends."""
        if self._db is None:
            from tg_parser.db.connect import open_database

            self._db = open_database(self.settings, check_migrations=check_migrations)
            click.get_current_context().call_on_close(self.close)
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


_pass_app_object = click.make_pass_decorator(AppContext, ensure=True)

F = TypeVar("F", bound=Callable[..., Any])


def pass_app(func: F) -> F:
    """Hand the command its AppContext, after refusing any text argument no store (and no output) can
    carry: a NUL character, or a lone surrogate (bytes of argv that are not UTF-8). Every command takes its
    context this way, so none reaches a driver's UnicodeEncodeError with such a value."""

    @functools.wraps(func)
    def checked(*args: Any, **kwargs: Any) -> Any:
        _refuse_unstorable_text(kwargs)
        return func(*args, **kwargs)

    return _pass_app_object(checked)  # type: ignore[return-value]


def _refuse_unstorable_text(values: dict[str, Any]) -> None:
    ctx = click.get_current_context()
    params = {p.name: p for p in ctx.command.params}
    for name, value in values.items():
        for text in _texts(value):
            problem = _text_problem(text)
            if problem is not None:
                param = params.get(name)
                label = (
                    param.opts[0]
                    if isinstance(param, click.Option)
                    else (param.human_readable_name if param is not None else name)
                )
                raise InvalidInput(f"{label} {problem}", "give it as UTF-8 text without NUL characters")


def _texts(value: Any) -> list[str]:
    if isinstance(value, str | PurePath):
        return [str(value)]
    if isinstance(value, tuple | list):
        return [text for item in value for text in _texts(item)]
    return []


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"is not valid UTF-8 text (a lone surrogate at character {exc.start})"
    return None
