"""Shared output: `--json` for scripts, aligned tables for people, progress bars only at a terminal."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

import click
from loguru import logger

from tg_parser.cli.context import AppContext
from tg_parser.config import requested_log_format
from tg_parser.db.codec import format_timestamp
from tg_parser.logging import STDERR_LOCK, json_line, live_line, redact

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def log_format() -> str:
    """This command's log format: "json" with LOG_FORMAT=json, else "text"."""
    ctx = click.get_current_context(silent=True)
    app = ctx.find_object(AppContext) if ctx is not None else None
    return app.log_format if app is not None else requested_log_format()


def say(message: str, level: str = "INFO") -> None:
    """A line for the operator on stderr: as written in text mode; with LOG_FORMAT=json, a JSON log line
    like every other line there (so a log collector parses all of stderr)."""
    if log_format() != "json":
        click.echo(message, err=True)
        return
    text = " ".join(message.split())
    ctx = click.get_current_context(silent=True)
    app = ctx.find_object(AppContext) if ctx is not None else None
    if app is not None and app.run_id is not None:  # this command's logging is set up: it carries the run id
        logger.bind(logger_name="tg_parser.cli").log(level, text)
    else:  # before the settings are read (a usage error, an invalid setting): no run id yet
        sys.stderr.write(json_line(level, text))
        sys.stderr.flush()


def say_error(message: str) -> None:
    """The one error line: `Error: what — what to do` in text mode, an ERROR line with LOG_FORMAT=json."""
    if log_format() == "json":
        say(message, "ERROR")
    else:
        click.echo(f"Error: {redact(message)}", err=True)


def show_progress(silent: bool) -> bool:
    """Progress bars only at a terminal, and not with --silent or JSON logs (stderr is JSON lines then)."""
    return not silent and sys.stderr.isatty() and log_format() != "json"


def json_option(func: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of a table."
    )(func)


def silent_option(func: F) -> F:
    return click.option("--silent", is_flag=True, help="No progress bar, even at a terminal.")(func)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_timestamp(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return str(value)


def to_json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2, default=_default)


def emit_json(data: Any) -> None:
    click.echo(to_json(data))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=_default)
    return str(value)


def emit_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], empty: str = "(none)") -> None:
    if not rows:
        click.echo(empty)
        return
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    click.echo("  ".join("-" * w for w in widths))
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


class ProgressBar:
    """click's progress bar on stderr, updated under the stderr lock so that a log line written by
    another thread never lands in the middle of a redraw."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar

    def update(self, steps: int) -> None:
        with STDERR_LOCK:
            self._bar.update(steps)

    def redraw(self) -> None:
        self._bar._last_line = None  # click only draws a line that differs from the last one drawn
        self._bar.render_progress()


@contextmanager
def progress_bar(length: int, label: str) -> Iterator[ProgressBar]:
    """A progress bar on stderr that log lines do not garble: each text log line written while it is
    shown takes the bar's line and the bar is drawn again below it (see logging.live_line)."""
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        locked = ProgressBar(bar)
        with live_line(locked.redraw):
            yield locked


def progress(items: Sequence[T], *, label: str = "", silent: bool = False) -> Iterator[T]:
    """A progress bar on stderr when it is a terminal; a plain pass-through in cron, CI or with --silent."""
    if not show_progress(silent):
        yield from items
        return
    with progress_bar(len(items), label) as bar:
        for item in items:
            yield item
            bar.update(1)
