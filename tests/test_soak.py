"""Soak: `tg-parser run --every` for many short cycles (the example export and a live Telegram channel that
gets new posts and comments before every cycle): peak memory stays flat, and open file descriptors and
database connections do not grow. Both dialects.

The process is real (support/crash_child.py) and paced by the test instead of the clock: after each
cycle it drains the run queue as its pause does, prints "pause N" and waits for the test, which reads
its peak RSS (VmHWM, then resets it through /proc/PID/clear_refs so each figure is one cycle's peak),
its open descriptors (/proc/PID/fd) and, on PostgreSQL, its connections (pg_stat_activity).

TG_PARSER_SOAK_CYCLES (default 50) sets the cycles; e.g. 500 for a longer soak outside CI.
"""

from __future__ import annotations

import os
import statistics
import subprocess
from pathlib import Path

import psycopg
import pytest
from support.child_runs import SEED, add_telegram_sources, import_example, read_until, start_child, stop

from tg_parser.config import Settings
from tg_parser.db.connect import open_database
from tg_parser.stores import RawStore

CYCLES = max(20, int(os.environ.get("TG_PARSER_SOAK_CYCLES", "50")))
WINDOW = 5  # cycles per compared window: the first after warm-up, and the last


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def connections(settings: Settings, pid_of_test: int) -> int:
    with psycopg.connect(
        host=settings.db_host, port=settings.db_port, user=settings.db_user, dbname="postgres"
    ) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> %s",
            [settings.db_name, pid_of_test],
        ).fetchone()
    return int(row[0])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_run_every_soak_keeps_memory_descriptors_and_connections_flat(settings, tmp_path):
    import_example(settings)
    add_telegram_sources(settings)
    argv = ["run", "--all", "--every", "1h", "--out", str(tmp_path / "out"), "--processor", "extractive"]
    spec = {"world": {"seed": SEED, "size": 30, "grow": 2}, "paced": True, "argv": argv}
    with open(tmp_path / "stderr.log", "w") as stderr:
        proc = start_child(settings, spec, stdin=subprocess.PIPE, stderr=stderr, LOG_LEVEL="ERROR")
    assert proc.stdin is not None
    peaks: list[int] = []
    fds: list[int] = []
    conns: list[int] = []
    try:
        for cycle in range(1, CYCLES + 1):
            read_until(proc, f"pause {cycle}")
            peaks.append(status_kib(proc.pid, "VmHWM"))
            Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # reset the peak: the next is one cycle's
            fds.append(len(os.listdir(f"/proc/{proc.pid}/fd")))
            if settings.db_type == "postgres":
                conns.append(connections(settings, 0))
            proc.stdin.write("go\n")
            proc.stdin.flush()
    finally:
        stop(proc)
    assert proc.returncode == 0, (proc.returncode, (tmp_path / "stderr.log").read_text()[-3000:])
    db = open_database(settings)
    try:
        grown = RawStore(db).count(1001, "post")
    finally:
        db.close()
    assert grown >= 30 + 2 * CYCLES - 5, "every cycle ingested new posts"

    early, late = slice(WARMUP := 5, WARMUP + WINDOW), slice(-WINDOW, None)
    first, last = statistics.median(peaks[early]), statistics.median(peaks[late])
    print(
        f"\n{settings.db_type}: {CYCLES} cycles; peak RSS per cycle {first / 1024:.1f} MiB (cycles 6-10) → "
        f"{last / 1024:.1f} MiB (last {WINDOW}), {100 * (last - first) / first:+.1f} %; "
        f"fds {fds[early]} → {fds[late]}; connections {conns[early]} → {conns[late]}"
    )
    assert abs(last - first) <= 0.10 * first, f"peak RSS {first} → {last} KiB: {peaks}"
    assert max(fds[late]) <= max(fds[early]), f"open descriptors grew: {fds}"
    if conns:
        assert max(conns[late]) <= max(conns[early]), f"connections grew: {conns}"
