"""Logging through loguru: text or JSON lines on stderr, a run id on every line, secrets redacted.

Stdlib loggers (psycopg.pool, yoyo, telethon, openai/httpx) are routed into loguru so that one format
and one redaction rule apply to everything the process writes.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from loguru import logger

_secrets: set[str] = set()

# DSN/URL credentials and key=value secrets that may arrive from a library's own message. Each pattern
# starts at a literal or a word boundary and stops at a delimiter, so a long line (a megabyte of text a user
# typed, quoted back in an error) is scanned in linear time: a leading `[a-z][a-z0-9+.-]*://` was tried at
# every letter and scanned to the end of each run of letters, quadratic in the run's length. A URL's
# userinfo cannot hold a "/" (RFC 3986), so the password stops there too.
_URL_PASSWORD = re.compile(r"://(?P<user>[^:/@\s]*+):(?P<pw>[^@\s/]*+)@")
_KV_SECRET = re.compile(
    r"(?P<key>\b(?:password|api_key|apikey|token|secret)\s*[=:]\s*)(?P<val>'(?:[^'\\]|\\.)*'|\S+)", re.I
)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._\-]+")


def register_secrets(values: list[str]) -> None:
    """Remember secret values (passwords, keys, session strings) so they are masked wherever they appear."""
    for value in values:
        if value and len(value) >= 3:
            _secrets.add(value)


def redact(text: str) -> str:
    """Mask every known secret and anything shaped like a credential."""
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    text = _URL_PASSWORD.sub(lambda m: f"://{m['user']}:***@", text)
    text = _KV_SECRET.sub(lambda m: f"{m['key']}***", text)
    return _BEARER.sub(r"\1***", text)


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


class _InterceptHandler(logging.Handler):
    """Send stdlib logging records into loguru, keeping the original logger name and level."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        message = record.getMessage()
        if record.name == "py.warnings":  # "file:line: Category: text" and the source line: keep the first
            message = message.strip().split("\n", 1)[0]
        elif record.name.startswith("psycopg"):
            # libpq's messages run over lines ("connection refused\n\tIs the server running ..."): one
            # record, one line, as every other log line (the pool logs one per reconnect attempt).
            message = " ".join(message.split())
        logger.bind(logger_name=record.name).opt(exception=record.exc_info, depth=0).log(level, message)


_TEXT_FORMAT = (
    "{time:YYYY-MM-DD HH:mm:ss!UTC}Z | {level: <7} | {extra[run_id]} | {extra[logger_name]} | {message}\n"
)


def _patch(record: Any) -> None:
    record["message"] = redact(record["message"])
    record["extra"].setdefault("logger_name", record["name"])
    exception = record["exception"]
    if exception is not None and exception.type is not None:
        # loguru would print the exception's own message untouched, and a driver error can quote a DSN:
        # format the traceback here, redact it, and let the sinks print that instead.
        formatted = traceback.format_exception(exception.type, exception.value, exception.traceback)
        record["extra"]["traceback"] = redact("".join(formatted))
        record["exception"] = None


def _text_format(record: Any) -> str:
    return _TEXT_FORMAT + ("{extra[traceback]}" if "traceback" in record["extra"] else "")


def _json_line(record: Any) -> str:
    payload = {
        "time": record["time"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "level": record["level"].name,
        "run_id": record["extra"].get("run_id"),
        "logger": record["extra"].get("logger_name", record["name"]),
        "message": record["message"],
    }
    hidden = ("run_id", "logger_name", "traceback")
    extras = {k: v for k, v in record["extra"].items() if k not in hidden}
    if extras:
        payload["extra"] = json.loads(redact(json.dumps(extras, default=str, ensure_ascii=False)))
    if "traceback" in record["extra"]:
        payload["exception"] = record["extra"]["traceback"]  # redacted by _patch
    return json.dumps(payload, ensure_ascii=False) + "\n"


def json_line(level: str, message: str, run_id: str | None = None, logger_name: str = "tg_parser.cli") -> str:
    """One JSON log line built without loguru, with the fields of every other line: for what is written
    before logging is set up (an invalid setting, a usage error) or from a signal handler."""
    payload = {
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "level": level,
        "run_id": run_id,
        "logger": logger_name,
        "message": redact(message),
    }
    return json.dumps(payload, ensure_ascii=False) + "\n"


# Held while writing to stderr: a log line from any thread and a progress bar's redraw never interleave.
STDERR_LOCK = threading.RLock()
_live_lines: list[Callable[[], None]] = []


@contextmanager
def live_line(redraw: Callable[[], None]) -> Iterator[None]:
    """While a progress bar (or a status line) is drawn on stderr's last line, each text log line first
    clears that line, is written in its place, and `redraw` draws the bar again below it: the log line
    is never glued to the bar, and the bar stays whole."""
    with STDERR_LOCK:
        _live_lines.append(redraw)
    try:
        yield
    finally:
        with STDERR_LOCK:
            _live_lines.remove(redraw)


def _stderr(message: Any) -> None:
    # Looked up at each write, so a swapped stderr (tests, click's runner) gets the lines.
    with STDERR_LOCK:
        if not _live_lines:
            sys.stderr.write(message)
            return
        sys.stderr.write("\r\x1b[K" + message)  # back to the bar's start, erase it, write the log line
        _live_lines[-1]()


def _json_sink(stream: Any = None) -> Any:
    """A sink writing one JSON object per line to `stream` (default: stderr, looked up at each write)."""

    def write(message: Any) -> None:
        (stream or sys.stderr).write(_json_line(message.record))

    return write


def setup_logging(level: str = "INFO", fmt: str = "text", run_id: str | None = None, sink: Any = None) -> str:
    """Configure loguru once per process; returns the run id that every line carries.

    `sink` is a text stream (default: stderr); in JSON mode each record is written to it as one object.
    """
    run_id = run_id or new_run_id()
    logger.remove()
    logger.configure(extra={"run_id": run_id}, patcher=_patch)
    if fmt == "json":
        logger.add(_json_sink(sink), level=level, format="{message}", backtrace=False, diagnose=False)
    else:
        logger.add(
            sink or _stderr, level=level, format=_text_format, backtrace=False, diagnose=False, colorize=False
        )
    debug = level in ("TRACE", "DEBUG")
    logging.basicConfig(
        handlers=[_InterceptHandler()], level=logging.DEBUG if debug else logging.INFO, force=True
    )
    # Python warnings become log lines too (one format, JSON included). Off, then on: captureWarnings(True)
    # does nothing when capture was on already, even if warnings.showwarning was replaced since.
    logging.captureWarnings(False)
    logging.captureWarnings(True)
    for name in ("psycopg", "psycopg.pool", "yoyo", "telethon", "openai", "httpx"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    quiet = logging.DEBUG if debug else logging.WARNING
    # yoyo narrates every migration step and psycopg.pool every checkout at INFO: only useful when debugging.
    for name in ("yoyo", "psycopg", "psycopg.pool"):
        logging.getLogger(name).setLevel(quiet)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("telethon").setLevel(logging.WARNING)
    return run_id
