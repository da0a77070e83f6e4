"""Who started a run: the user, host and process, and the origin (`cli`, `api`, `worker`).

Every run report records it in its params as `started_by` (ProcessingStore.start_run adds it), so
`tg-parser runs list|show` can say where a run came from. The command group sets `cli` and the
command's name; a worker executing a run queued through the HTTP API sets `api` with the name of the
key that requested it (`worker` for a run queued otherwise), and `worker` for its own housekeeping.
"""

from __future__ import annotations

import contextvars
import getpass
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_ORIGIN: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("run_origin", default=None)


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no login name and no USER variable (a container with an arbitrary uid)
        return None


def started_by() -> dict[str, Any]:
    """{user, host, pid, origin, ...} of the work starting now in this context."""
    origin = _ORIGIN.get() or {"origin": "cli"}
    return {"user": _user(), "host": socket.gethostname(), "pid": os.getpid(), **origin}


def set_origin(name: str, **details: Any) -> contextvars.Token[dict[str, Any] | None]:
    """Runs started from now on in this context record `name` (and `details`) as their origin; the
    token undoes it (reset_origin)."""
    return _ORIGIN.set({"origin": name, **details})


def reset_origin(token: contextvars.Token[dict[str, Any] | None]) -> None:
    _ORIGIN.reset(token)


@contextmanager
def origin(name: str, **details: Any) -> Iterator[None]:
    """Runs started inside this block record `name` (and `details`) as their origin."""
    token = set_origin(name, **details)
    try:
        yield
    finally:
        reset_origin(token)
