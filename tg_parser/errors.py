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


class DatabaseTimeout(TgParserError):
    """PostgreSQL cancelled a statement or ended a session on one of the configured timeouts."""

    exit_code = EXIT_FAILURE


class SchemaOutdated(TgParserError):
    """The database's migrations are behind the code."""

    exit_code = EXIT_CONFIG


class StoreNotInitialised(SchemaOutdated):
    """A store was never created (no SQLite file, no PostgreSQL schema or migration bookkeeping, or no
    migration applied): the fix is `tg-parser init`, not an upgrade of a schema that is not there."""


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


class ItemFailure(TgParserError):
    """One item of work (a message, a batch) failed; the failure journal records it and decides its fate.

    `error_class` is the short, stable name the journal and run reports use. `transient` failures are
    retried and journaled as not permanent; `retry_output` ones (the worker produced something unusable)
    are retried, then journaled as permanent; `fatal` ones stop the run, since every item would fail the
    same way. The LLM client's errors and the processing coordinator's own failures share this surface,
    so the coordinator handles any processor's failures alike.
    """

    error_class = "failure"
    transient = False
    retry_output = False
    fatal = False

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, hint)
        self.status = status
        self.retry_after = retry_after
        self.attempts = 1
        self.input_tokens = 0
        self.output_tokens = 0

    @property
    def retryable(self) -> bool:
        return not self.fatal and (self.transient or self.retry_output)

    @property
    def permanent(self) -> bool:
        """Journal flag: a permanent failure is not selected again unless --retry-failed is given."""
        return not (self.transient or self.fatal)
