"""Clean stops for long commands: the first Ctrl-C (or SIGTERM) asks the work to stop, a second Ctrl-C
quits at once."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import click

from tg_parser.cli.context import AppContext
from tg_parser.cli.output import log_format
from tg_parser.logging import json_line


@contextmanager
def stop_on_signals(stop: threading.Event, message: str) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    as_json = log_format() == "json"
    ctx = click.get_current_context(silent=True)
    app = ctx.find_object(AppContext) if ctx is not None else None
    run_id = app.run_id if app is not None else None

    def request_stop(signum: int, frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        # A raw write: a signal handler must not re-enter a buffered stream (loguru, click) that the
        # interrupted code may be writing to at this very moment. With LOG_FORMAT=json, a JSON line.
        line = json_line("WARNING", " ".join(message.split()), run_id) if as_json else message
        with suppress(OSError):
            os.write(2, line.encode())

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
