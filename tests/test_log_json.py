"""LOG_FORMAT=json: every line on stderr is one JSON object — log lines, the lines the CLI writes for the
operator (the processor it chose, "Next cycle in", "Stopped."), error lines (also those written before
the settings are read, and about the settings themselves), click's usage errors, the signal handler's
line, and Python warnings. Real processes; every stderr line must parse.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from tg_parser.logging import setup_logging

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "channel_export" / "result.json"
FIELDS = {"time", "level", "run_id", "logger", "message"}


def json_lines(stderr: str) -> list[dict]:
    records = []
    assert stderr == "" or stderr.endswith("\n"), stderr
    for line in stderr.split("\n")[:-1]:
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"not a JSON line on stderr: {line!r}\n--- all of stderr:\n{stderr}")
        assert isinstance(record, dict) and set(record) >= FIELDS, line
        records.append(record)
    return records


@pytest.fixture
def env(sqlite_dir: Path, tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL", "LOG_"))}
    return {**clean, "LOG_FORMAT": "json", "DB_TYPE": "sqlite", "DB_SQLITE_DIR": str(sqlite_dir)}


def tgp(env: dict[str, str], cwd: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tg_parser", *args],
        env=env,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_whole_quick_start_logs_only_json(env: dict[str, str], tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    steps = [
        ("ingest", "--from-export", str(EXAMPLE)),
        ("process",),
        ("topicize",),
        ("export", "--out", out),
        ("run", "--out", out),
        ("health",),
        ("db", "status"),
        ("sql", "explain", "sources_get", "-p", "source_id=x"),
    ]
    seen: list[dict] = []
    for args in steps:
        proc = tgp(env, tmp_path, *args)
        assert proc.returncode == 0, f"{args}: {proc.stderr}"
        seen += json_lines(proc.stderr)
    messages = [r["message"] for r in seen]
    assert any(m.startswith("processor: extractive") for m in messages)  # the CLI's own line
    assert any(r["logger"] == "tg_parser.pipeline.run" for r in seen)  # and the library's log lines
    assert all(r["run_id"] for r in seen)


@pytest.mark.parametrize(
    ("args", "extra_env", "stdin", "code", "says"),
    [
        (["sources", "pause", "NOPE"], {}, "", 2, "no source 'NOPE'"),
        (["sql", "show", "NOPE"], {}, "", 2, "unknown query 'NOPE'"),
        (["ingest", "--bogus"], {}, "", 2, "No such option '--bogus' — see 'tg-parser ingest --help'"),
        (["--bogus"], {}, "", 2, "No such option '--bogus'"),
        (["nosuch"], {}, "", 2, "No such command 'nosuch'"),
        (["db"], {}, "", 2, "missing command — see 'tg-parser db --help'"),
        (["sources", "add", "@x", "--since", "yesterday"], {}, "", 2, "'yesterday' is not a date"),
        (["run", "--every", "0s"], {}, "", 2, "--every"),
        (["db", "rollback", "--store", "raw"], {}, "n\n", 1, "aborted"),  # a declined prompt
        (["sources", "remove", "x"], {}, "n\n", 2, "no source 'x'"),  # refused before its prompt
        (["health"], {"DB_PORT": "abc", "DB_TYPE": "postgres"}, "", 3, "invalid setting DB_PORT"),
        (["init"], {"DB_TYPE": "postgres"}, "", 3, "DATABASE_URL is not set"),
        (
            ["db", "migrate-to-postgres", "--to", "postgresql://tgp:secret-pw@127.0.0.1:1/x", "--dry-run"],
            {},
            "",
            3,
            "cannot connect",
        ),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_errors_are_one_json_line(
    env: dict[str, str],
    tmp_path: Path,
    args: list[str],
    extra_env: dict[str, str],
    stdin: str,
    code: int,
    says: str,
) -> None:
    proc = tgp({**env, **extra_env}, tmp_path, *args, stdin=stdin)
    assert proc.returncode == code, proc.stderr
    records = json_lines(proc.stderr)
    errors = [r for r in records if r["level"] == "ERROR"]
    assert len(errors) == 1, proc.stderr
    assert says in errors[0]["message"] and "Traceback" not in proc.stderr
    assert "secret-pw" not in proc.stderr + proc.stdout


def test_the_stop_line_of_run_every_is_json(env: dict[str, str], tmp_path: Path) -> None:
    assert tgp(env, tmp_path, "ingest", "--from-export", str(EXAMPLE)).returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "tg_parser", "run", "--every", "1h", "--out", str(tmp_path / "out")],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr or []], daemon=True)
    reader.start()
    seen: list[str] = []
    deadline = time.monotonic() + 90
    try:
        while not any("Next cycle in 1h" in line for line in seen):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(seen)
            with contextlib.suppress(queue.Empty):
                seen.append(lines.get(timeout=0.5))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    while not lines.empty():
        seen.append(lines.get_nowait())
    messages = [r["message"] for r in json_lines("".join(seen))]
    assert any(m.startswith("Stopping after the current step") for m in messages)
    assert messages[-1] == "Stopped."


@pytest.fixture
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield
    logging.captureWarnings(False)
    logger.remove()
    logger.configure(extra={}, patcher=None)
    logger.add(sys.stderr)
    root.handlers[:], root.level = saved


def test_python_warnings_become_json_lines(_restore_logging: None) -> None:
    stream = io.StringIO()
    setup_logging("INFO", "json", sink=stream)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("this option is deprecated", DeprecationWarning, stacklevel=1)
    (record,) = json_lines(stream.getvalue())
    assert record["level"] == "WARNING" and record["logger"] == "py.warnings"
    assert record["message"].endswith("DeprecationWarning: this option is deprecated")
