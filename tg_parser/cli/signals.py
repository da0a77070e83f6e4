"""Clean stops for long commands: the first Ctrl-C (or SIGTERM) asks the work to stop, a second Ctrl-C
quits at once."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any


@contextmanager
def stop_on_signals(stop: threading.Event, message: str) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        # A raw write: a signal handler must not re-enter a buffered stream (loguru, click) that the
        # interrupted code may be writing to at this very moment.
        with suppress(OSError):
            os.write(2, message.encode())

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
