"""`tg-parser run --every` stopped by a signal exits with its last cycle's status: 0 when the cycle
succeeded, 1 when it failed (a supervisor stopping a worker whose cycles fail must see it fail).

A real process, stopped with SIGTERM while it waits for the next cycle; the test waits for the line
that says so (with a deadline), never for a fixed time.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "channel_export" / "result.json"


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tg_parser", *args], env=env, capture_output=True, text=True, timeout=120
    )


def wait_for_line(lines: queue.Queue[str | None], seen: list[str], text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"no line with {text!r} within {timeout} s; stderr so far: {''.join(seen)}")
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            continue
        if line is None:
            pytest.fail(f"the process ended before printing {text!r}: {''.join(seen)}")
        seen.append(line)
        if text in line:
            return


@pytest.mark.parametrize("last_cycle", ["succeeded", "failed"])
def test_every_stopped_by_sigterm_exits_with_the_last_cycle_status(
    sqlite_dir: Path, tmp_path: Path, last_cycle: str
) -> None:
    env = {**os.environ, "DB_TYPE": "sqlite", "DB_SQLITE_DIR": str(sqlite_dir), "LOG_LEVEL": "WARNING"}
    assert cli(env, "ingest", "--from-export", str(EXAMPLE)).returncode == 0
    if last_cycle == "failed":
        # A Telegram source with no Telegram settings: its ingest step fails, every cycle.
        assert cli(env, "sources", "add", "1234567", "--id", "live").returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "tg_parser", "run", "--every", "1h", "--out", str(tmp_path / "out")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        wait_for_line(lines, seen, "Next cycle in 1h", timeout=90)  # the cycle is over, the pause begun
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    while not lines.empty():
        line = lines.get_nowait()
        if line is not None:
            seen.append(line)
    err = "".join(seen)
    assert "Traceback" not in err
    if last_cycle == "succeeded":
        assert code == 0, err
        assert "Stopped." in err
    else:
        assert code == 1, err
        assert "Stopped; the last cycle failed." in err
