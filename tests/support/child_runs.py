"""Parent-side helpers for tests that run real tg-parser processes through support/crash_child.py
(tests/test_crash_kill.py, tests/test_soak.py): start one, read its marks and pauses, stop it, check its
SQLite files."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from support import crash_child
from support.cli import db_env
from tg_parser.cli.main import cli
from tg_parser.config import Settings
from tg_parser.db.connect import open_database
from tg_parser.db.sqlite import STORE_FILES
from tg_parser.domain.models import Source
from tg_parser.stores import IngestionStore, ProcessingStore, RawStore

CHILD = Path(crash_child.__file__)
EXAMPLE = Path(__file__).resolve().parent.parent.parent / "examples" / "channel_export" / "result.json"
SEED = int(os.environ.get("TG_PARSER_CRASH_SEED", "20251207"))


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        **db_env(settings),
        **crash_child.telegram_env(),
        "INGEST_BATCH_SIZE": "50",
        "LOG_LEVEL": "WARNING",
        **extra,
    }


def start_child(
    settings: Settings, spec: dict[str, Any], *, stdin: int | None = None, stderr: Any = None, **env: str
) -> subprocess.Popen[str]:
    """The child with `spec`, in its own process group; stdout (marks, pauses) and stderr piped (stderr
    to `stderr` instead when given, e.g. a file for a long run that would fill the pipe)."""
    return subprocess.Popen(
        [sys.executable, str(CHILD), json.dumps(spec)],
        env=child_env(settings, **env),
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr if stderr is not None else subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the test can reap helpers a kill leaves
    )


def run_child(
    settings: Settings, spec: dict[str, Any], *, kill_after: int | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the child to its end. With `kill_after`, the test sends SIGKILL once it has read that mark:
    the child runs on meanwhile, so the kill lands at no chosen instruction (inside a commit, say)."""
    proc = start_child(settings, spec, **env)
    try:
        if kill_after is not None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("mark ") and int(line.split()[1]) >= kill_after:
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "Traceback" not in err, err
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def sqlite_intact(settings: Settings) -> None:
    if settings.db_type != "sqlite":
        return
    for name in STORE_FILES.values():
        conn = sqlite3.connect(settings.db_sqlite_dir / name)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], name
        finally:
            conn.close()


def add_telegram_sources(settings: Settings) -> None:
    world = crash_child.build_world(SEED)
    db = open_database(settings)
    try:
        store = IngestionStore(db)
        for channel_id, comments in ((crash_child.MAIN, True), (crash_child.SMALL, False)):
            channel = world.channels[channel_id]
            store.add_source(
                Source(
                    source_id=channel.username,
                    channel_id=channel.id,
                    username=channel.username,
                    title=channel.title,
                    access_hash=channel.access_hash,
                    include_comments=comments,
                )
            )
    finally:
        db.close()


def import_example(settings: Settings) -> None:
    result = CliRunner().invoke(cli, ["ingest", "--from-export", str(EXAMPLE)], env=db_env(settings))
    assert result.exit_code == 0, result.output


def read_until(proc: subprocess.Popen[str], prefix: str, timeout: float = 120) -> list[str]:
    """Lines of the child's stdout up to the first that starts with `prefix` (the test fails after
    `timeout` seconds through pytest-timeout's own deadline and the check below)."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(prefix):
            return lines
        assert time.monotonic() < deadline, f"no {prefix!r} within {timeout} s"
    raise AssertionError(
        f"the process ended before {prefix!r}: {proc.wait()} {proc.stderr.read() if proc.stderr else ''}"
    )


def stop(proc: subprocess.Popen[str]) -> None:
    """Stop a paced process as its pause would (EOF on stdin), any other one with SIGTERM; then wait."""
    if proc.poll() is None:
        if proc.stdin is not None:
            proc.stdin.close()
        else:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def snapshot(settings: Settings) -> dict[str, Any]:
    """Raw rows (all but the insert time), their versions, the sources' cursors and the work queue."""
    db = open_database(settings)
    try:
        raw = RawStore(db)
        messages: dict[str, Any] = {}
        versions: dict[str, Any] = {}
        for channel in raw.channels():
            for message in raw.stream_channel(channel["channel_id"]):
                ref = message.source_ref
                messages[ref] = message.model_dump(mode="json", exclude={"inserted_at"})
                versions[ref] = [
                    v.model_dump(mode="json", exclude={"id", "observed_at"}) for v in raw.versions(ref)
                ]
        ingestion = IngestionStore(db)
        sources = {
            s.source_id: (s.channel_id, s.kind, s.status, s.last_post_id, s.comments_unavailable)
            for s in ingestion.list_sources()
        }
        cursors = {
            source_id: sorted((c.thread_id, c.last_comment_id) for c in ingestion.comment_cursors(source_id))
            for source_id in sources
        }
        return {
            "messages": messages,
            "versions": versions,
            "sources": sources,
            "cursors": cursors,
            "pending": ProcessingStore(db).count_pending(),
        }
    finally:
        db.close()


def processed_exactly_once(settings: Settings) -> int:
    """Every raw message with text has one document, the queue is empty and no lease is left."""
    db = open_database(settings)
    try:
        raw = RawStore(db)
        processing = ProcessingStore(db)
        refs = {m.source_ref for c in raw.channels() for m in raw.stream_channel(c["channel_id"]) if m.text}
        documents = [d.source_ref for d in processing.stream_documents()]
        assert len(documents) == len(set(documents))
        assert set(documents) == refs, (len(documents), len(refs))
        assert processing.count_pending() == 0
        assert processing.leases() == []
        return len(documents)
    finally:
        db.close()


def reference_run(
    settings: Settings, spec: dict[str, Any], monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> int:
    """The same command, uninterrupted, in this process with the same hooks; returns its mark count."""
    return len(reference_marks(settings, spec, monkeypatch, env))


def reference_marks(
    settings: Settings, spec: dict[str, Any], monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> list[str]:
    """As reference_run, returning its mark lines ("mark N label"), so a test can pick a kill point."""
    lines: list[str] = []
    with monkeypatch.context() as patch:
        crash_child.install(spec, lines.append, patch.setattr)
        result = CliRunner().invoke(
            cli, spec["argv"], env={**db_env(settings), **env}, prog_name="tg-parser", catch_exceptions=False
        )
    assert result.exit_code == 0, result.output
    return lines
