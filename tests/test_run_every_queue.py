"""`tg-parser run --every` executes runs queued through the API between its own cycles (both dialects).

A real process on the test install; the test queues a run while the process pauses between cycles and
waits (with a deadline, polling the database) until the run has succeeded, then stops the process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support.cli import db_env

from tg_parser.db.connect import open_database
from tg_parser.stores.run_queue import RunQueueStore

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "channel_export" / "result.json"


def test_every_executes_queued_runs_while_it_pauses(settings, tmp_path: Path) -> None:
    env = {**os.environ, **db_env(settings), "LOG_LEVEL": "WARNING", "WORKER_POLL_SECONDS": "0.2"}
    imported = subprocess.run(
        [sys.executable, "-m", "tg_parser", "ingest", "--from-export", str(EXAMPLE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert imported.returncode == 0, imported.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "tg_parser", "run", "--every", "1h", "--out", str(tmp_path / "cycle")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    db = open_database(settings)
    try:
        store = RunQueueStore(db)
        store.enqueue(
            "queued-1",
            ["export"],
            source_id=None,
            options={"out_dir": str(tmp_path / "queued")},
            requested_by="test",
            webhook_url=None,
        )
        deadline = time.monotonic() + 120
        while (row := store.get("queued-1"))["status"] in ("queued", "running"):
            assert proc.poll() is None, "run --every ended early"
            assert time.monotonic() < deadline, f"the queued run was not executed: {row}"
            time.sleep(0.1)
        assert row["status"] == "succeeded", row
        assert row["worker_id"] and row["finished_at"] is not None
        assert (tmp_path / "queued" / "kb_entries.ndjson").stat().st_size > 0
    finally:
        db.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
