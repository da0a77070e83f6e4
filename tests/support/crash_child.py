"""A real tg-parser process with test hooks, for the kill -9 and soak tests (tests/test_crash_kill.py,
tests/test_soak.py).

Run as `python tests/support/crash_child.py SPEC_JSON`: it installs the hooks the spec asks for, then runs
the tg-parser CLI (`tg_parser.cli.main`) with `spec["argv"]` in this process, so everything below the
hooks — the CLI, the stores, the database drivers, Telethon — is the real code of a real process.

Hooks:

* `world`: Telegram is the fake of support/fake_telegram.py (real Telethon types at the client
  boundary), built by `build_world(seed, phase)`; `grow` posts that many new posts (each with a comment)
  in the first channel at every connect, so each `run --every` cycle finds new messages;
* `marks`: functions ("module:Class.method") that print a numbered mark line to stdout before and after
  each call, and `telegram_marks` one per request the fake answers: "mark N label";
* `kill_at`: at mark N the process sends itself SIGKILL — no finally, no atexit, no flush, exactly a
  `kill -9` at a known point (the parent picks N from a seeded random generator);
* `pause_at`: at mark N the process prints "paused N" and waits for a line on stdin (EOF too), so the
  test can act at a known point (stop the database server under it) and then let it go on;
* `paced`: `run --every` pauses on the test instead of the clock: after each cycle's queue drain the
  process prints "pause N" and waits for a line on stdin ("go", or EOF to stop), so the test measures the
  process between cycles and no test waits the 10 s minimum interval.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import os
import random
import signal
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from telethon.crypto import AuthKey
from telethon.sessions import StringSession

from support.fake_telegram import FakeTelegram, webpage

MAIN = 1001  # a channel with a discussion group (comments)
MAIN_GROUP = 2001
SMALL = 1002  # a channel without comments


def telegram_env() -> dict[str, str]:
    """Telegram credentials and a logged-in StringSession, as an operator's environment holds them."""
    session = StringSession()
    session.set_dc(2, "149.154.167.51", 443)
    session.auth_key = AuthKey(bytes(range(256)))
    return {
        "TELEGRAM_API_ID": "12345",
        "TELEGRAM_API_HASH": "0123456789abcdef0123456789abcdef",
        "TELEGRAM_SESSION": StringSession.save(session),
    }


def build_world(seed: int, phase: int = 1, size: int = 260) -> FakeTelegram:
    """A deterministic Telegram: the same seed and phase give the same channels, posts, comments, edits.

    Phase 1: a channel of `size` posts (service messages and link previews among them) whose every 7th post
    has 1-4 comments, and a small channel of 40 posts. Phase 2 adds 60 posts, edits 10 of the newest
    posts (new versions on the next run's re-check) and adds comments under old posts."""
    rng = random.Random(seed)
    world = FakeTelegram()
    main = world.add_channel(MAIN, "News", "newsfeed", discussion_id=MAIN_GROUP)
    small = world.add_channel(SMALL, "Small", "smallchan")

    def posts(count: int) -> None:
        for _ in range(count):
            if rng.random() < 0.03:
                world.service(main)
                continue
            media = webpage(f"https://example.org/{main.next_id}") if rng.random() < 0.1 else None
            post = world.post(main, f"post {main.next_id} «{rng.randrange(10**6)}» 🚀", media=media)
            if post.id % 7 == 0:
                for n in range(rng.randint(1, 4)):
                    world.comment(main, post.id, f"comment {n} under {post.id}")

    posts(size)
    for _ in range(40):
        world.post(small, f"small {small.next_id} {rng.randrange(10**6)}")
    if phase >= 2:
        posts(60)
        newest = sorted(i for i, m in main.messages.items() if getattr(m, "post", False) and i <= size)
        for message_id in rng.sample(newest[-90:], 10):
            if hasattr(main.messages[message_id], "message"):
                world.edit(main, message_id, f"edited {message_id} {rng.randrange(10**6)}")
        for post_id in rng.sample([i for i in main.messages if i % 7 == 0 and i <= size], 5):
            world.comment(main, post_id, f"late comment under {post_id}")
    return world


def grow(world: FakeTelegram, count: int) -> None:
    """`count` new posts in the main channel, each with a comment (what a live channel does between cycles)."""
    main = world.channels[MAIN]
    for _ in range(count):
        post = world.post(main, f"live post {main.next_id}: tg-parser soak news #{main.next_id % 5}")
        world.comment(main, post.id, f"a reply to live post {post.id}")


def _resolve(target: str) -> tuple[Any, str]:
    module_name, _, attr_path = target.partition(":")
    owner: Any = importlib.import_module(module_name)
    *parents, name = attr_path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    return owner, name


class Marks:
    """Numbered marks; SIGKILL at `kill_at`, a pause on stdin at `pause_at`. `emit` receives each mark
    line."""

    def __init__(
        self,
        kill_at: int | None,
        emit: Callable[[str], None],
        setattr_: Callable[..., None] = setattr,
        pause_at: int | None = None,
    ) -> None:
        self.count = 0
        self.kill_at = kill_at
        self.pause_at = pause_at
        self.emit = emit
        self.setattr = setattr_

    def mark(self, label: str) -> None:
        self.count += 1
        self.emit(f"mark {self.count} {label}")
        if self.count == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.count == self.pause_at:
            self.emit(f"paused {self.count}")
            sys.stdin.readline()

    def wrap(self, target: str) -> None:
        """Mark before and after every call of `target` (after each item, when it returns a generator)."""
        owner, name = _resolve(target)
        original = getattr(owner, name)
        label = target.rpartition(":")[2]

        @functools.wraps(original)
        def marked(*args: Any, **kwargs: Any) -> Any:
            self.mark(f"{label}:before")
            result = original(*args, **kwargs)
            if inspect.isgenerator(result):
                return self._items(label, result)
            self.mark(f"{label}:after")
            return result

        self.setattr(owner, name, marked)

    def _items(self, label: str, items: Iterator[Any]) -> Iterator[Any]:
        """A generator's items, a mark after each is handed over (e.g. between COPY blocks)."""
        for item in items:
            yield item
            self.mark(f"{label}:item")


def install(
    spec: dict[str, Any], emit: Callable[[str], None], setattr_: Callable[..., None] = setattr
) -> Marks:
    """Install the spec's hooks in this process. The in-process reference runs use it too, with
    `monkeypatch.setattr` as `setattr_` so the hooks end with the test."""
    marks = Marks(spec.get("kill_at"), emit, setattr_, spec.get("pause_at"))
    for target in spec.get("marks", []):
        marks.wrap(target)
    world_spec = spec.get("world")
    if world_spec is not None:
        from tg_parser.ingestion import client as client_module

        world = build_world(world_spec["seed"], world_spec.get("phase", 1), world_spec.get("size", 260))
        answer = world.answer
        connect_growth = world_spec.get("grow", 0)

        def marked_answer(request: Any) -> Any:
            if spec.get("telegram_marks"):
                marks.mark(f"telegram:{type(request).__name__}")
            return answer(request)

        world.answer = marked_answer  # type: ignore[method-assign]
        factory = world.factory()

        def build(settings: Any, *, for_login: bool = False) -> Any:
            # Keep the fake's own bookkeeping flat over a long run: it is the test's, not tg-parser's.
            world.requests.clear()
            world.clients.clear()
            if connect_growth:
                grow(world, connect_growth)
            return factory(settings, for_login=for_login)

        setattr_(client_module, "client_factory", build)
        setattr_(client_module, "sleep", lambda seconds: None)
    if spec.get("clock_offset"):
        # This process starts that many seconds late: every lease of a killed process has lapsed.
        from tg_parser.stores.base import Store

        offset = timedelta(seconds=spec["clock_offset"])
        setattr_(Store, "now", staticmethod(lambda: datetime.now(UTC) + offset))
    if spec.get("paced"):
        _pace()
    return marks


def _pace() -> None:
    from tg_parser.cli import cmd_run

    real_pause = cmd_run._pause_executing_queued_runs
    cycles = {"n": 0}

    def paced(queue: Any, interval: float) -> bool:
        real_pause(queue, 0.0)  # the real pause's work (drain the run queue), without its clock
        cycles["n"] += 1
        print(f"pause {cycles['n']}", flush=True)
        line = sys.stdin.readline()
        return line.strip() != "go" or queue.stop.is_set()

    cmd_run._pause_executing_queued_runs = paced


def main() -> None:
    spec = json.loads(sys.argv[1])
    install(spec, lambda line: print(line, flush=True))
    from tg_parser.cli.main import cli

    cli.main(args=spec["argv"], prog_name="tg-parser")


if __name__ == "__main__":
    main()
