"""What every command shares: settings (loaded once, validated), logging, and the open database."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import click

from tg_parser.config import Settings, load_settings, requested_log_format
from tg_parser.db.base import Database
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


pass_app = click.make_pass_decorator(AppContext, ensure=True)
