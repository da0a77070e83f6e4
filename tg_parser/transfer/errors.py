"""Errors of the bulk migrator; each reaches the operator as one line (what, why, what to do)."""

from __future__ import annotations

from tg_parser.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_LOCKED, TgParserError


class MigrationError(TgParserError):
    """The migration could not run or did not complete; the target was left as it was."""

    exit_code = EXIT_FAILURE


class PreflightRefused(TgParserError):
    """A precondition does not hold (versions, non-empty target, schema drift); nothing was written."""

    exit_code = EXIT_CONFIG


class SourceBusy(TgParserError):
    """Another process is writing the SQLite stores."""

    exit_code = EXIT_LOCKED


class HelperFailed(MigrationError):
    """A scan helper process died or stopped answering; the scan cannot complete."""
