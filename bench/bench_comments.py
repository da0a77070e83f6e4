"""Benchmark: requests made and comments stored, per run, by the discussion-history stream (this tree)
and by main's per-thread reads, over the same simulated days of comments.

The channel (the fake Telegram of tests/support: real Telethon types, every response serialized to
Telegram's wire bytes and parsed back) has POSTS posts, each with a few comments, and a linked discussion
group that also holds chatter. After a first backfill run, each "day" brings NEW comments spread over
posts of every age (half of them on posts older than the 100 re-checked every run), a few chatter
messages and one new post; then both implementations run once, each on its own install and its own copy
of the world, in alternating order (A/B/B/A...). Printed per implementation: the requests made for
comments (the group's history, thread reads, root look-ups and GetFullChannel), the comments stored out
of those written, and the process CPU seconds and wall seconds of the runs, with the load average.

    python bench/bench_comments.py                          # SQLite, 2,000 posts, 10 days of 300
    python bench/bench_comments.py --dialect postgres --posts 5000 --days 5 --new 1000

Main's code is read with `git show <ref>:tg_parser/ingestion/{client,runner}.py` (default ref: main) and
run against this tree's stores (the new tables are simply not used by it).
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import subprocess
import sys
import tempfile
import time
import types as pytypes
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "bench")]

from common import drop_pg, fresh_install  # noqa: E402
from support.fake_telegram import FakeTelegram  # noqa: E402
from telethon.tl import functions  # noqa: E402
from telethon.tl import types as tl  # noqa: E402

from tg_parser.db.connect import open_database  # noqa: E402
from tg_parser.domain.models import Source  # noqa: E402
from tg_parser.ingestion import runner as this_runner  # noqa: E402
from tg_parser.ingestion.client import TelegramGateway  # noqa: E402
from tg_parser.stores import IngestionStore, RawStore  # noqa: E402

CHANNEL, GROUP = 1001, 2002


def load_main(ref: str) -> tuple[Any, Any]:
    """Main's gateway and runner modules, built from `git show` (the runner importing main's gateway)."""

    def module(name: str, path: str, replace: tuple[str, str] | None = None) -> Any:
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{ref}:{path}"], check=True, capture_output=True, text=True
        ).stdout
        if replace:
            source = source.replace(*replace)
        mod = pytypes.ModuleType(name)
        mod.__file__ = f"<{ref}:{path}>"
        sys.modules[name] = mod
        exec(compile(source, mod.__file__, "exec"), mod.__dict__)
        return mod

    client = module("bench_main_client", "tg_parser/ingestion/client.py")
    runner = module(
        "bench_main_runner",
        "tg_parser/ingestion/runner.py",
        ("from tg_parser.ingestion.client import", "from bench_main_client import"),
    )
    return client, runner


def comment_requests(requests: list[Any]) -> int:
    count = 0
    for r in requests:
        if (isinstance(r, functions.messages.GetHistoryRequest) and r.peer.channel_id == GROUP) or isinstance(
            r,
            functions.messages.GetRepliesRequest
            | functions.channels.GetMessagesRequest
            | functions.channels.GetFullChannelRequest,
        ):
            count += 1
    return count


def written_comments(world: FakeTelegram) -> int:
    group = world.channels[GROUP]
    roots = set(group.roots.values())
    return sum(
        1
        for m in group.messages.values()
        if isinstance(m, tl.Message)
        and isinstance(m.reply_to, tl.MessageReplyHeader)
        and (m.reply_to.reply_to_top_id or m.reply_to.reply_to_msg_id) in roots
    )


class Install:
    def __init__(self, name: str, runner: Any, gateway_cls: Any, world: FakeTelegram, dialect: str) -> None:
        self.name, self.runner, self.gateway_cls, self.world = name, runner, gateway_cls, world
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bench_comments_{name}_"))
        self.db_name = f"tgp_bench_comments_{name}_{os.getpid()}"
        self.settings, _ = fresh_install(dialect, self.workdir, self.db_name)
        self.dialect = dialect
        self.db = open_database(self.settings)
        channel = world.channels[CHANNEL]
        IngestionStore(self.db).add_source(
            Source(
                source_id="newsfeed",
                channel_id=CHANNEL,
                username="newsfeed",
                access_hash=channel.access_hash,
                include_comments=True,
            )
        )
        self.cpu = self.wall = 0.0
        self.requests = 0

    def run(self, measure: bool = True) -> None:
        gateway = self.gateway_cls(self.world.client())
        gateway.open()
        policy = self.runner.Policy(sleep=lambda s: None, rng=random.Random(1))
        ingestor = self.runner.Ingestor(self.db, gateway, run_id="bench", policy=policy)
        mark = len(self.world.requests)
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            outcome = ingestor.run_source(IngestionStore(self.db).get_source("newsfeed"))
        finally:
            gateway.close()
        if outcome.status != "ok":
            raise SystemExit(f"{self.name}: {outcome.status} {outcome.message}")
        if measure:
            self.cpu += time.process_time() - cpu
            self.wall += time.perf_counter() - wall
            self.requests += comment_requests(self.world.requests[mark:])

    def stored(self) -> int:
        return sum(1 for m in RawStore(self.db).stream_channel(CHANNEL) if m.message_type == "comment")

    def close(self) -> None:
        self.db.close()
        if self.dialect == "postgres":
            drop_pg(self.db_name)


def build_world(posts: int, rng: random.Random) -> FakeTelegram:
    world = FakeTelegram()
    channel = world.add_channel(CHANNEL, "News", "newsfeed", discussion_id=GROUP)
    for i in range(posts):
        world.post(channel, f"post {i}")
        for j in range(rng.randint(0, 3)):
            world.comment(channel, i + 1, f"comment {j} on {i}")
    return world


def one_day(world: FakeTelegram, rng: random.Random, new: int) -> None:
    channel = world.channels[CHANNEL]
    last_post = max(channel.messages)
    for i in range(new):
        if i % 2:
            post_id = rng.randint(max(1, last_post - 99), last_post)  # among the re-checked posts
        else:
            post_id = rng.randint(1, max(1, last_post - 100))  # older than the re-check window
        world.comment(channel, post_id, f"day comment {i}")
        if i % 25 == 0:
            world.chatter(channel, "off-topic")
    world.post(channel, "today's post")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dialect", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--posts", type=int, default=2000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--new", type=int, default=300, help="new comments a day")
    parser.add_argument("--ref", default="main", help="the git ref whose per-thread code is compared")
    args = parser.parse_args()

    main_client, main_runner = load_main(args.ref)
    rng = random.Random(16)
    world_a = build_world(args.posts, rng)
    world_b = copy.deepcopy(world_a)
    world_b.clients = []
    this = Install("stream", this_runner, TelegramGateway, world_a, args.dialect)
    base = Install("main", main_runner, main_client.TelegramGateway, world_b, args.dialect)
    try:
        this.run(measure=False)  # the first backfill is not what is compared
        base.run(measure=False)
        for day in range(args.days):
            seed = rng.random()
            one_day(world_a, random.Random(seed), args.new)
            one_day(world_b, random.Random(seed), args.new)
            order = (this, base) if day % 2 == 0 else (base, this)
            for install in order:
                install.run()
        written = written_comments(world_a)
        assert written == written_comments(world_b)
        load = os.getloadavg()
        print(
            f"dialect={args.dialect} posts={args.posts} days={args.days} new/day={args.new} "
            f"loadavg={load[0]:.2f},{load[1]:.2f},{load[2]:.2f}"
        )
        print(
            f"{'':8} {'requests':>9} {'req/run':>8} {'stored':>8} {'written':>8} {'cpu s/run':>10} {'wall s/run':>10}"
        )
        for install in (this, base):
            print(
                f"{install.name:8} {install.requests:9d} {install.requests / args.days:8.1f} "
                f"{install.stored():8d} {written:8d} {install.cpu / args.days:10.3f} {install.wall / args.days:10.3f}"
            )
        print(
            f"ratios stream/main: requests {this.requests / max(1, base.requests):.3f}, "
            f"stored {this.stored() / max(1, base.stored()):.3f}, cpu {this.cpu / max(1e-9, base.cpu):.3f}"
        )
    finally:
        this.close()
        base.close()


if __name__ == "__main__":
    main()
