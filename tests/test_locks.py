"""The SQLite side of named locks (db/locks.py): an flock on a file under `locks/`, and what the refusal
says about the holder when the file is not one tg-parser wrote (another program, a crash mid-write).

The lock's behaviour between real tg-parser processes, on both dialects, is in test_ingest_locks.py.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tg_parser.db.locks import LockBusy, file_lock, lock_file, pid_alive


def held_by_another_holder(path: Path, content: str):
    """An open file description holding the flock on `path` with `content` (flock excludes another
    description of the same file even within one process, as it does across processes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    handle = open(path, encoding="utf-8")  # noqa: SIM115 - held for the test
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


@pytest.mark.parametrize(
    "content",
    ["not json at all", "{}", '{"pid": null, "host": "h"}', "", "[1, 2"],
    ids=["garbage", "empty-object", "no-pid", "empty", "torn-write"],
)
def test_a_holder_that_left_no_description_is_refused_without_naming_anyone(tmp_path, content):
    path = lock_file(tmp_path, "ingest:chan")
    holder = held_by_another_holder(path, content)
    try:
        with pytest.raises(LockBusy) as caught, file_lock(path, "ingest:chan"):
            pytest.fail("the lock was taken while another description held it")
        assert caught.value.holder is None
        assert str(caught.value) == "lock 'ingest:chan' is held"
        assert path.read_text(encoding="utf-8") == content  # the refused taker wrote nothing
    finally:
        holder.close()


def test_a_described_holder_is_named_and_its_description_survives_the_refusal(tmp_path):
    path = lock_file(tmp_path, "x")
    description = json.dumps({"pid": 4242, "host": "box", "since": "2026-01-01T00:00:00+00:00"})
    holder = held_by_another_holder(path, description)
    try:
        with pytest.raises(LockBusy) as caught, file_lock(path, "x"):
            pass
        assert caught.value.holder == "pid 4242 on box since 2026-01-01T00:00:00+00:00"
        assert path.read_text(encoding="utf-8") == description
    finally:
        holder.close()


def test_the_next_holder_replaces_the_old_description_with_its_own(tmp_path):
    path = lock_file(tmp_path, "x")
    held_by_another_holder(path, "left over by a crashed program, much longer than a description" * 5).close()
    with file_lock(path, "x"):
        written = json.loads(path.read_text(encoding="utf-8"))  # truncated first: nothing left over
        assert written["pid"] == os.getpid() and written["name"] == "x"
        with pytest.raises(LockBusy) as caught, file_lock(path, "x"):
            pass
        assert caught.value.holder is not None and caught.value.holder.startswith(f"pid {os.getpid()} on ")
    with file_lock(path, "x"):  # released at the end of the block
        pass


def test_pid_alive_tells_a_running_process_from_an_ended_one():
    assert pid_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=60)  # reaped: its id names no process now
    assert not pid_alive(child.pid)
