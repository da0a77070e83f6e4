"""The migrator's scan helpers end themselves when the migrator that started them is gone.

`kill -9` of the migrator tells its process pool nothing: without the parent watch (worker.start's
`parent_pid`) the helpers would wait for work forever, holding the store files open. Real processes
throughout: a migrator-like parent with a real helper pool, killed with SIGKILL; and a lone helper
watching a parent that ends, is already gone, or (no pidfd) must be polled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support.waiting import wait_for

from tg_parser.db.sqlite import STORE_FILES


def ended(pid: int) -> bool:
    """The process is gone or a zombie (ended; its reaper may be slow, e.g. a container's init)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def python(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group: whatever it leaves behind can be killed at the end
    )


def kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


MIGRATOR = """
    import sys
    from pathlib import Path
    from tg_parser.transfer.parallel import Scan
    from tg_parser.transfer.source import SqliteSource
    from tg_parser.transfer.tables import source_tables

    if __name__ == "__main__":
        stores = ("raw", "processing")
        source = SqliteSource(Path(sys.argv[1]), stores)
        source.hold()
        scan = Scan(source, source_tables(source, stores), strip_nul=False, helpers=2)
        print(" ".join(str(pid) for pid in scan.executor._processes), flush=True)
        sys.stdin.readline()  # killed here, never closing the scan
"""


@pytest.mark.slow
def test_helpers_end_when_the_migrator_is_killed(sqlite_dir):
    migrator = python(MIGRATOR, str(sqlite_dir))
    try:
        line = migrator.stdout.readline()
        assert line.strip(), migrator.stderr.read()
        helpers = [int(pid) for pid in line.split()]
        assert len(helpers) == 2 and all(not ended(pid) for pid in helpers)
        migrator.kill()
        migrator.wait(timeout=30)
        wait_for(lambda: all(ended(pid) for pid in helpers), timeout=30, what="the helpers to end")
    finally:
        kill_group(migrator)


HELPER = """
    import os, sys
    from pathlib import Path
    from tg_parser.transfer import worker

    if sys.argv[3] == "no-pidfd":
        del os.pidfd_open  # as on a system without pidfds: the helper polls instead
    worker.start(Path(sys.argv[1]), ("raw",), {"raw": sys.argv[2]}, parent_pid=int(sys.argv[4]))
    print("started", flush=True)
    sys.stdin.readline()  # only the parent watch ends this process
    sys.exit(0)
"""


def a_parent() -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)


@pytest.mark.slow
@pytest.mark.parametrize("watch", ["pidfd", "no-pidfd"])
def test_a_helper_ends_when_its_parent_ends(sqlite_dir, watch):
    parent = a_parent()
    helper = python(HELPER, str(sqlite_dir), STORE_FILES["raw"], watch, str(parent.pid))
    try:
        assert helper.stdout.readline().strip() == "started", helper.stderr.read()
        assert helper.poll() is None  # the parent runs: the helper stays
        parent.kill()
        parent.wait(timeout=30)  # reaped, as the migrator's own parent would
        assert helper.wait(timeout=30) == 1  # ended by the watch, not by its stdin
        assert "Traceback" not in helper.stderr.read()
    finally:
        kill_group(helper)
        if parent.poll() is None:
            parent.kill()
            parent.wait()


@pytest.mark.slow
def test_a_helper_whose_parent_is_already_gone_ends_at_once(sqlite_dir):
    parent = a_parent()
    parent.kill()
    parent.wait(timeout=30)
    helper = python(HELPER, str(sqlite_dir), STORE_FILES["raw"], "pidfd", str(parent.pid))
    try:
        assert helper.wait(timeout=60) == 1
        assert "Traceback" not in helper.stderr.read()
    finally:
        kill_group(helper)


def test_a_helper_that_was_not_started_refuses_to_scan():
    """`scan` before `start` (a pool without its initializer) is an error, not a scan of nothing."""
    from tg_parser.transfer import worker

    assert worker._source is None  # this process never started a helper
    with pytest.raises(RuntimeError, match="was not started"):
        worker.scan(None, False, 10, True)  # type: ignore[arg-type]
