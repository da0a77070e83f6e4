"""Benchmark: import a generated Telegram Desktop export into SQLite and PostgreSQL.

Prints messages per second and peak RSS for each dialect and size (default 50k and 200k messages), so
the flat-memory claim can be checked: peak RSS must not grow with the file.

    python bench/bench_import.py                      # 50k and 200k, SQLite and PostgreSQL
    python bench/bench_import.py --sizes 200000 --dialects sqlite
    python bench/bench_import.py --profile            # cProfile of one SQLite import (top functions)
    python bench/bench_import.py --sizes 200000 --dialects sqlite,sqlite-whole   # A/B: split read or not

PostgreSQL: the server from TG_PARSER_BENCH_PG_HOST/PORT/USER (default 127.0.0.1:5432, user postgres); a
scratch database `tgp_bench_<pid>` is created and dropped. Each import runs in a fresh child process so
its peak RSS (ru_maxrss) is its own. Targets (issue 3): ≥ 20,000 messages/s into SQLite, peak RSS under
200 MB whatever the file size.

Wall-clock rates depend on what else the machine runs, so every figure is printed with the load average
and with the import's own CPU time (user + system of the child, with the process it forks to read the
second half of a big export; on PostgreSQL the server's work is not in it), also per message ("CPU
us/msg"). "read" is the first pass (parse and check the file, prepare the rows), "path" the CPU of
its longest process (what bounds its wall time when a processor is free), "store" the rest.
A dialect suffixed "-whole" (sqlite-whole, postgres-whole) reads the file in one process, as the
import did before the split read, for an A/B in one invocation. --profile samples CPU time, not wall
time, so a busy machine does not skew it (it sees this process only, not the forked reader).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_HOST = os.environ.get("TG_PARSER_BENCH_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TG_PARSER_BENCH_PG_PORT", "5432"))
PG_USER = os.environ.get("TG_PARSER_BENCH_PG_USER", "postgres")

WORDS_RU = [
    "канал",
    "новости",
    "технологии",
    "наука",
    "данные",
    "модель",
    "город",
    "проект",
    "релиз",
    "обновление",
    "сервер",
]
WORDS_EN = [
    "channel",
    "news",
    "technology",
    "science",
    "data",
    "model",
    "city",
    "project",
    "release",
    "update",
    "server",
]
PLACEHOLDER = "(File not included. Change data exporting settings to download.)"


def generate(path: Path, count: int, seed: int = 1) -> int:
    """Write a single-chat export of `count` messages (about 1 in 40 is a service message) to `path`."""
    rng = random.Random(seed)
    start = int(datetime(2020, 1, 1, tzinfo=UTC).timestamp())
    with path.open("w", encoding="utf-8") as out:
        out.write(
            '{\n "name": "Bench Channel",\n "type": "public_channel",\n "id": 1999999999,\n "messages": [\n'
        )
        for i in range(1, count + 1):
            stamp = start + i * 90
            date = datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            if i % 40 == 0:
                m = {
                    "id": i,
                    "type": "service",
                    "date": date,
                    "date_unixtime": str(stamp),
                    "actor": "Bench Channel",
                    "actor_id": "channel1999999999",
                    "action": "pin_message",
                    "message_id": i - 1,
                    "text": "",
                    "text_entities": [],
                }
            else:
                words = WORDS_RU if i % 2 else WORDS_EN
                body = " ".join(rng.choice(words) for _ in range(rng.randint(8, 40)))
                m = {
                    "id": i,
                    "type": "message",
                    "date": date,
                    "date_unixtime": str(stamp),
                    "from": "Bench Channel",
                    "from_id": "channel1999999999",
                }
                if i % 7 == 0:
                    m.update({"edited": date, "edited_unixtime": str(stamp + 600)})
                if i % 11 == 0:
                    m.update({"photo": PLACEHOLDER, "width": 1280, "height": 720})
                if i % 13 == 0:
                    m["reply_to_message_id"] = i - 3
                if i % 3 == 0:
                    m["text"] = [body[:20], {"type": "bold", "text": body[20:40]}, body[40:]]
                    m["text_entities"] = [
                        {"type": "plain", "text": body[:20]},
                        {"type": "bold", "text": body[20:40]},
                        {"type": "plain", "text": body[40:]},
                    ]
                else:
                    m["text"] = body
                    m["text_entities"] = [{"type": "plain", "text": body}]
            if i > 1:
                out.write(",\n")
            out.write(json.dumps(m, ensure_ascii=False, indent=None))
        out.write("\n ]\n}\n")
    return path.stat().st_size


def child(dialect: str, target: str, export: str, profile: bool) -> None:
    """Run one import in this process and print its figures as JSON."""
    whole = dialect.endswith("-whole")
    dialect = dialect.removesuffix("-whole")
    sys.path.insert(0, str(ROOT))
    from tg_parser.config import load_settings
    from tg_parser.db import migrations
    from tg_parser.db.connect import open_database
    from tg_parser.ingestion.export_import import ExportImporter

    if dialect == "sqlite":
        settings = load_settings(_env_file=None, db_type="sqlite", db_sqlite_dir=Path(target))
    else:
        settings = load_settings(
            _env_file=None,
            db_type="postgres",
            db_host=PG_HOST,
            db_port=PG_PORT,
            db_user=PG_USER,
            db_name=target,
        )
    migrations.upgrade(settings)
    db = open_database(settings)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    phases: dict[str, float] = {}
    cpu_started = _cpu()
    children_started = _cpu(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()

    cpu_phases: dict[str, float] = {}

    def progress(phase: str, done: int, total: int) -> None:
        if phase not in phases:
            phases[phase] = time.perf_counter()
            cpu_phases[phase] = _cpu()
            cpu_phases[phase + " children"] = _cpu(resource.RUSAGE_CHILDREN)

    importer = ExportImporter(
        db,
        run_id="bench",
        batch_size=settings.ingest_batch_size,
        sqlite_dir=settings.db_sqlite_dir if dialect == "sqlite" else None,
        progress=progress,
    )
    if whole:
        importer.split_min_bytes = None
    if profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile(time.process_time)  # CPU time: the machine may be busy
        profiler.enable()
    result = importer.run(Path(export))
    elapsed = time.perf_counter() - started
    cpu_seconds = _cpu() - cpu_started
    if profile:
        profiler.disable()
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    db.close()
    read_seconds = phases.get("importing", started) - started
    read_cpu = cpu_phases.get("importing", cpu_started) - cpu_started
    # The read pass's longest process: this one or the forked reader of the file's second half.
    read_children = cpu_phases.get("importing children", children_started) - children_started
    read_path = max(read_cpu - read_children, read_children)
    print(
        json.dumps(
            {
                "messages": result.messages,
                "inserted": result.inserted,
                "seconds": elapsed,
                "cpu_seconds": cpu_seconds,
                "read_seconds": read_seconds,
                "read_cpu_seconds": read_cpu,
                "read_path_cpu_seconds": read_path,
                "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "child_rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                "baseline_rss_kb": baseline,
            }
        )
    )


def _cpu(*which: int) -> float:
    """CPU seconds (user + system) of this process and of its children that ended (the import reads a
    big export in two processes, the second one forked and waited for before the store pass), or of
    `which` only."""
    total = 0.0
    for who in which or (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def run_child(dialect: str, target: str, export: Path, profile: bool = False) -> dict:
    command = [sys.executable, __file__, "--child", dialect, target, str(export)]
    if profile:
        command.append("--profile")
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"import failed ({dialect}):\n{done.stderr[-3000:]}")
    if profile:
        print(done.stderr[-6000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def pg_database(create: bool, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True
    ) as conn:
        if create:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        else:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50000,200000", help="comma-separated message counts")
    parser.add_argument("--dialects", default="sqlite,postgres")
    parser.add_argument("--profile", action="store_true", help="profile one SQLite import of the first size")
    parser.add_argument("--child", nargs=3, metavar=("DIALECT", "TARGET", "EXPORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, profile=args.profile)
        return
    sizes = [int(s) for s in args.sizes.split(",") if s]
    dialects = [d for d in args.dialects.split(",") if d]
    rows = []
    with tempfile.TemporaryDirectory(prefix="tgp-bench-") as scratch:
        for size in sizes:
            export = Path(scratch) / f"export_{size}.json"
            t0 = time.perf_counter()
            nbytes = generate(export, size)
            # The export was written long before a real import: flush it now, or the import's first
            # fsync (a WAL checkpoint) waits for this file's writeback and bills it to the import.
            os.sync()
            print(
                f"generated {size:,} messages, {nbytes / 1e6:.1f} MB in {time.perf_counter() - t0:.1f}s",
                flush=True,
            )
            if args.profile:
                run_child("sqlite", str(Path(scratch) / "profile"), export, profile=True)
                return
            for dialect in dialects:
                load = os.getloadavg()
                if dialect.startswith("sqlite"):
                    target = str(Path(scratch) / f"{dialect}_{size}")
                    figures = run_child(dialect, target, export)
                else:
                    target = f"tgp_bench_{os.getpid()}_{size}"
                    pg_database(True, target)
                    try:
                        figures = run_child(dialect, target, export)
                    finally:
                        pg_database(False, target)
                figures["load"] = load
                rows.append((dialect, size, nbytes, figures))
                rate = figures["messages"] / figures["seconds"]
                print(
                    f"  {dialect:<12} {figures['messages']:>8,} msgs  {figures['seconds']:6.1f}s "
                    f"(read pass {figures['read_seconds']:.1f}s, CPU {figures['cpu_seconds']:.1f}s)  "
                    f"{rate:8,.0f} msg/s  peak RSS {figures['peak_rss_kb'] / 1024:6.1f} MB "
                    f"(children {figures['child_rss_kb'] / 1024:.1f} MB)  "
                    f"load {load[0]:.2f}",
                    flush=True,
                )
    print()
    print(
        f"{'dialect':<13}{'messages':>10}{'file MB':>9}{'seconds':>9}{'msg/s':>9}{'CPU s':>7}{'msg/CPU s':>11}"
        f"{'CPU us/msg':>11}{'read us':>9}{'path us':>9}{'store us':>9}{'peak RSS MB':>13}{'base RSS MB':>13}{'load 1m':>9}"
    )
    for dialect, _size, nbytes, f in rows:
        per = 1e6 / f["messages"]
        print(
            f"{dialect:<13}{f['messages']:>10,}{nbytes / 1e6:>9.1f}{f['seconds']:>9.1f}"
            f"{f['messages'] / f['seconds']:>9,.0f}{f['cpu_seconds']:>7.1f}{f['messages'] / f['cpu_seconds']:>11,.0f}"
            f"{f['cpu_seconds'] * per:>11.1f}{f['read_cpu_seconds'] * per:>9.1f}"
            f"{f['read_path_cpu_seconds'] * per:>9.1f}"
            f"{(f['cpu_seconds'] - f['read_cpu_seconds']) * per:>9.1f}"
            f"{f['peak_rss_kb'] / 1024:>13.1f}{f['baseline_rss_kb'] / 1024:>13.1f}{f['load'][0]:>9.2f}"
        )
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    by = {(d, s): f for d, s, _, f in rows}
    if len(sizes) >= 2:
        small, large = sizes[0], sizes[-1]
        for dialect in dialects:
            if (dialect, small) in by and (dialect, large) in by:
                a, b = by[(dialect, small)], by[(dialect, large)]
                print(
                    f"{dialect}: {large // small}x the messages → peak RSS x{b['peak_rss_kb'] / a['peak_rss_kb']:.2f}, "
                    f"rate x{(b['messages'] / b['seconds']) / (a['messages'] / a['seconds']):.2f}"
                )


if __name__ == "__main__":
    main()
