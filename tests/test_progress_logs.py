"""Log lines and progress bars share stderr at a terminal without garbling each other: a log line takes
the bar's line (cleared first), and the bar is drawn again below it.

The byte stream is replayed on a tiny terminal model (carriage return, newline, erase to end of line)
and the resulting screen is checked: every log line starts at the left margin and is whole, no line
holds both a bar and a log line, and the bar is still there at the end. One case is a real process on
a pseudo-terminal: `tg-parser export` on PostgreSQL with LOG_LEVEL=DEBUG, whose pool logs while the
bar is drawn.
"""

from __future__ import annotations

import io
import logging
import os
import pty
import re
import select
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from loguru import logger
from support.cli import db_env

from tg_parser.cli.cmd_process import ProcessCounts, _progress
from tg_parser.cli.main import cli
from tg_parser.cli.output import progress_bar
from tg_parser.logging import setup_logging

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "channel_export" / "result.json"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ \| [A-Z]+ *\| \S+ \| \S+ \| .*$")
_ESCAPE = re.compile(r"\x1b\[(\?25[lh]|K)")


def screen(raw: str) -> list[str]:
    """What a terminal shows after `raw` (\\n also returns to the margin, as a tty's ONLCR does)."""
    rows: list[list[str]] = [[]]
    row = col = 0
    i = 0
    while i < len(raw):
        char = raw[i]
        if char == "\x1b":
            match = _ESCAPE.match(raw, i)
            assert match, f"unexpected escape sequence {raw[i : i + 8]!r}"
            if match.group(1) == "K":
                del rows[row][col:]
            i = match.end()
            continue
        if char == "\r":
            col = 0
        elif char == "\n":
            row, col = row + 1, 0
            if row == len(rows):
                rows.append([])
        else:
            line = rows[row]
            line.extend(" " * (col - len(line)))
            if col < len(line):
                line[col] = char
            else:
                line.append(char)
            col += 1
        i += 1
    return ["".join(r).rstrip() for r in rows]


def check_screen(lines: list[str], bar_text: str) -> list[str]:
    """Log lines start at the margin and are whole; no line mixes a bar with a log line."""
    logs = [line for line in lines if " | " in line]
    assert logs, lines
    for line in logs:
        assert LOG_LINE.match(line), f"garbled log line: {line!r}"
        assert bar_text not in line, f"bar and log line on one line: {line!r}"
    return logs


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], _Terminal]]:
    """Call it in the test itself: pytest's capture puts its own stderr back between setup and call."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)

    def attach() -> _Terminal:
        stream = _Terminal()
        monkeypatch.setattr(sys, "stderr", stream)
        monkeypatch.setenv("COLUMNS", "100")
        setup_logging("INFO", "text")
        return stream

    yield attach
    logger.remove()
    logger.configure(extra={}, patcher=None)
    logger.add(sys.__stderr__)
    root.handlers[:], root.level = saved


def test_log_lines_above_a_progress_bar(terminal: Callable[[], _Terminal]) -> None:
    stream = terminal()
    with progress_bar(10, "Working") as bar:
        bar.update(3)
        logger.info("first line while the bar is shown")
        bar.update(2)
        worker = threading.Thread(target=lambda: logger.warning("a line from another thread"))
        worker.start()
        worker.join()
        bar.update(5)
    lines = screen(stream.getvalue())
    logs = check_screen(lines, "Working")
    assert [line.split(" | ")[-1] for line in logs] == [
        "first line while the bar is shown",
        "a line from another thread",
    ]
    shown = [line for line in lines if line]
    assert "Working" in shown[-1] and "100%" in shown[-1]  # the bar, whole, below the log lines


def test_log_lines_above_the_process_status_line(terminal: Callable[[], _Terminal]) -> None:
    stream = terminal()
    with _progress(False) as show:
        assert show is not None
        show(ProcessCounts(processed=5, failed=1, claimed=8))
        logger.info("a retry, logged while the status line is shown")
    lines = screen(stream.getvalue())
    check_screen(lines, "written")
    shown = [line for line in lines if line]
    assert shown[-1] == "5 written, 1 failed, 8 claimed"


def test_without_a_bar_log_lines_are_written_as_they_are(terminal: Callable[[], _Terminal]) -> None:
    stream = terminal()
    logger.info("plain")
    assert stream.getvalue().endswith("| plain\n") and "\x1b" not in stream.getvalue()


def test_a_real_export_on_a_terminal(pg_only_settings, tmp_path: Path) -> None:
    env = db_env(pg_only_settings)
    for args in (["ingest", "--from-export", str(EXAMPLE)], ["process"]):
        result = CliRunner().invoke(cli, args, env=env)
        assert result.exit_code == 0, result.output
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tg_parser", "export", "--out", str(tmp_path / "out")],
        env={**os.environ, **env, "LOG_LEVEL": "DEBUG", "COLUMNS": "100"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        assert ready, "the export wrote nothing for 60 s"
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 0
    assert proc.stdout is not None and b"Exported" in proc.stdout.read()
    proc.stdout.close()
    raw = b"".join(chunks).decode()
    assert "Exporting" in raw  # a bar was drawn (stderr is a terminal)
    lines = screen(raw)
    logs = check_screen(lines, "Exporting")
    assert any("psycopg.pool" in line for line in logs)  # the pool logged while the bar was shown
    bars = [line for line in lines if "Exporting" in line]
    assert bars and "100%" in bars[-1]
