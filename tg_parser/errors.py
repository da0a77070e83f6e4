"""Errors that reach the user as one clear line: what went wrong, why, and what to do."""

from __future__ import annotations

# Exit codes shared by every command (documented in docs/USER_GUIDE.md).
EXIT_OK = 0
EXIT_FAILURE = 1  # the work ran and something failed (partial failure, health check failed, ...)
EXIT_USAGE = 2  # bad arguments or input: click's usage errors, an unknown source id or query name, ...
EXIT_CONFIG = 3  # configuration or environment is wrong: fix settings and re-run
EXIT_LOCKED = 4  # another run holds the lock for this work; try again later
EXIT_RATE_LIMITED = 5  # Telegram asked us to wait; the source is skipped until then


class TgParserError(Exception):
    """An error with a message meant for the operator, and the exit code it should produce."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message


class ConfigError(TgParserError):
    """A setting is missing or invalid."""

    exit_code = EXIT_CONFIG


class DatabaseUnavailable(TgParserError):
    """The database cannot be reached or refused the login."""

    exit_code = EXIT_CONFIG


class SchemaOutdated(TgParserError):
    """The database's migrations are behind the code."""

    exit_code = EXIT_CONFIG


class QueryNotFound(TgParserError):
    """A named SQL query does not exist (a name given by the user: bad input)."""

    exit_code = EXIT_USAGE


class SqlCatalogError(TgParserError):
    """The .sql files are malformed (duplicate names, empty blocks, ...)."""

    exit_code = EXIT_CONFIG


class LockHeld(TgParserError):
    """Another process holds the lock for this work."""

    exit_code = EXIT_LOCKED


class InvalidInput(TgParserError):
    """A value given on the command line or in a file is not acceptable."""

    exit_code = EXIT_USAGE
