"""kill -9 at random points (seeded), then run again: real tg-parser processes, both dialects.

Each killed process is a real `tg-parser` command run by support/crash_child.py, which prints numbered
marks (a Telegram request answered by the fake, a store call before or after it returns, a COPY block
handed over) and either sends itself SIGKILL exactly at one, or is sent SIGKILL by the test once it has
read it (the child runs on meanwhile, so that kill lands anywhere, inside a commit too). Points and ways
come from a random generator seeded with SEED, so a failure names the point. After every kill the SQLite files must pass
`PRAGMA integrity_check`, every stored row must be a whole row of a correct run, and the cursors must not
be ahead of the rows; the final re-run must leave exactly the raw set, versions and cursors of an
uninterrupted run (the reference, run in this process on a fresh SQLite install with the same hooks).

TG_PARSER_CRASH_POINTS (default 3) sets the kills per ingestion test: about two thirds in the first
import, the rest in the second one (edits, new posts and comments).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from conftest import sqlite_settings
from support.child_runs import (
    SEED,
    add_telegram_sources,
    child_env,
    import_example,
    processed_exactly_once,
    read_until,
    reference_marks,
    reference_run,
    run_child,
    snapshot,
    sqlite_intact,
    start_child,
    stop,
)
from support.cli import db_env
from support.waiting import wait_for

from tg_parser.cli.main import cli
from tg_parser.config import Settings
from tg_parser.db.connect import open_database
from tg_parser.db.sqlite import STORE_FILES
from tg_parser.domain.models import RunReport
from tg_parser.stores import ProcessingStore
from tg_parser.stores.run_queue import RunQueueStore
from tg_parser.transfer import database_checksums

POINTS = max(2, int(os.environ.get("TG_PARSER_CRASH_POINTS", "3")))
EXPORT_CHAT = 1500000777
KILLED = -signal.SIGKILL

INGEST_MARKS = [
    "tg_parser.stores.raw:RawStore.store_batch",
    "tg_parser.stores.raw:RawStore.store_rows",
    "tg_parser.stores.ingestion:IngestionStore.advance_post_cursor",
    "tg_parser.stores.ingestion:IngestionStore.advance_comment_cursor",
    "tg_parser.stores.ingestion:IngestionStore.add_source",
]
PIPELINE_MARKS = [
    "tg_parser.stores.raw:RawStore.store_batch",
    "tg_parser.stores.processing:ProcessingStore.claim",
    "tg_parser.stores.processing:ProcessingStore.upsert_documents",
    "tg_parser.stores.topics:TopicStore.replace_channel_topics",
]


# --- what a run leaves -------------------------------------------------------------------------------


def assert_whole_rows_and_cursors_behind(state: dict[str, Any], before: dict, after: dict) -> None:
    """After a kill: every stored row is a row of the state before the run or of a finished run, and no
    cursor is ahead of the rows (each post at or below a source's cursor is stored)."""
    for ref, row in state["messages"].items():
        assert row in (before["messages"].get(ref), after["messages"].get(ref)), f"half-written {ref}"
    for source_id, (channel_id, _, _, cursor, _) in state["sources"].items():
        expected = {
            ref
            for ref, row in after["messages"].items()
            if row["channel_id"] == channel_id
            and row["message_type"] == "post"
            and row["message_id"] <= cursor
        }
        missing = expected - set(state["messages"])
        assert not missing, f"{source_id}: cursor {cursor} ahead of rows, missing {sorted(missing)[:5]}"


# --- the ingestion inputs ----------------------------------------------------------------------------


def write_export(path: Path, seed: int, phase: int) -> Path:
    """A Telegram Desktop export of 600 posts (650, 12 of them edited, in phase 2), in the format of
    examples/channel_export: mixed text pieces, replies, service messages, Cyrillic and emoji."""
    rng = random.Random(seed)
    base = 1740992400
    messages: list[dict[str, Any]] = []
    for i in range(1, 651 if phase >= 2 else 601):
        if i % 41 == 0:
            messages.append(
                {"id": i, "type": "service", "date_unixtime": str(base + i * 60), "action": "pin_message"}
            )
            continue
        text: Any = f"Сообщение {i}: {rng.randrange(10**6)} 🚀"
        if i % 5 == 0:
            text = ["Read ", {"type": "bold", "text": f"part {i}"}, " — «quoted» \\ back"]
        message = {
            "id": i,
            "type": "message",
            "date_unixtime": str(base + i * 60),
            "from": "Crash",
            "from_id": f"channel{EXPORT_CHAT}",
            "text": text,
        }
        if i % 9 == 0:
            message["reply_to_message_id"] = i - 1
        messages.append(message)
    if phase >= 2:
        for message in rng.sample([m for m in messages if m["type"] == "message" and m["id"] <= 600], 12):
            message["text"] = f"edited {message['id']} {rng.randrange(10**6)}"
            message["edited_unixtime"] = str(int(message["date_unixtime"]) + 3600)
    data = {"name": "Crash test channel", "type": "public_channel", "id": EXPORT_CHAT, "messages": messages}
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def fresh_sqlite(sqlite_template: Path, directory: Path) -> Settings:
    directory.mkdir()
    for name in STORE_FILES.values():
        shutil.copy(sqlite_template / name, directory / name)
    return sqlite_settings(directory)


# --- ingestion killed at random points ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["telegram", "export"])
def test_ingest_killed_at_random_points_then_rerun_equals_an_uninterrupted_run(
    kind, settings, sqlite_template, tmp_path, monkeypatch
):
    rng = random.Random(f"{SEED}-{kind}-{settings.db_type}")

    def spec(phase: int, kill_at: int | None = None) -> dict[str, Any]:
        if kind == "telegram":
            world = {"seed": SEED, "phase": phase}
            return {"world": world, "telegram_marks": True, "marks": INGEST_MARKS, "kill_at": kill_at,
                    "argv": ["ingest", "--all"]}  # fmt: skip
        export = write_export(tmp_path / f"export-{phase}.json", SEED, phase)
        return {"marks": INGEST_MARKS, "kill_at": kill_at, "argv": ["ingest", "--from-export", str(export)]}

    reference = fresh_sqlite(sqlite_template, tmp_path / "reference")
    ref_env = {k: v for k, v in child_env(reference).items() if k.startswith(("TELEGRAM_", "INGEST_"))}
    if kind == "telegram":
        add_telegram_sources(reference)
        add_telegram_sources(settings)
    states: list[dict[str, Any]] = [snapshot(reference)]
    marks: list[int] = [0]
    for phase in (1, 2):
        marks.append(reference_run(reference, spec(phase), monkeypatch, ref_env))
        states.append(snapshot(reference))
    assert states[2]["versions"] != states[1]["versions"], "phase 2 records new versions"

    kills_in_phase = {1: POINTS - POINTS // 3, 2: POINTS // 3}
    killed_at: list[tuple[int, int, bool]] = []
    for phase in (1, 2):
        for _ in range(kills_in_phase[phase]):
            point = rng.randint(1, marks[phase])
            by_test = rng.random() < 0.5  # else the child kills itself exactly at the mark
            result = run_child(
                settings,
                spec(phase, kill_at=None if by_test else point),
                kill_after=point if by_test else None,
            )
            how = "by the test after" if by_test else "at"
            context = f"{kind} phase {phase} killed {how} mark {point} of {marks[phase]} (seed {SEED})"
            if result.returncode == 0:
                continue  # an earlier kill left less to do than the point: this run finished
            assert result.returncode == KILLED, f"{context}: {result.stderr}"
            killed_at.append((phase, point, by_test))
            sqlite_intact(settings)
            assert_whole_rows_and_cursors_behind(snapshot(settings), states[phase - 1], states[phase])
        finished = run_child(settings, spec(phase))
        assert finished.returncode == 0, finished.stderr
        sqlite_intact(settings)
        state = snapshot(settings)
        for key in ("messages", "versions", "sources", "cursors", "pending"):
            assert state[key] == states[phase][key], f"{kind} phase {phase}, kills {killed_at}: {key} differ"
    assert killed_at, "no kill landed"


# --- run --every and worker killed mid-cycle ---------------------------------------------------------


def no_run_left_running(settings: Settings) -> list[RunReport]:
    """After the restarted process stopped: no run report of the killed process is still `running` (its
    heartbeat lapsed, so the restart marked it abandoned with what it had recorded). Returns those."""
    db = open_database(settings)
    try:
        runs = ProcessingStore(db).recent_runs(limit=1000)
    finally:
        db.close()
    assert [r.run_id for r in runs if r.status == "running"] == []
    abandoned = [r for r in runs if (r.error or "").startswith("abandoned:")]
    assert all(r.status == "failed" and r.finished_at is not None for r in abandoned), abandoned
    return abandoned


@pytest.mark.slow
def test_run_every_killed_mid_cycle_resumes_cleanly(settings, tmp_path):
    """`run --every` (a Telegram source with comments and the example export) is killed at a seeded mark
    inside its first cycle; restarted after the dead process's leases lapsed, its next cycle processes
    every message exactly once and writes a valid export."""
    rng = random.Random(f"{SEED}-every-{settings.db_type}")
    import_example(settings)
    add_telegram_sources(settings)
    out = tmp_path / "out"
    argv = ["run", "--all", "--every", "1h", "--out", str(out), "--processor", "extractive"]
    base = {"world": {"seed": SEED}, "marks": PIPELINE_MARKS, "argv": argv}
    killed = run_child(settings, {**base, "kill_at": rng.randint(5, 60)})
    assert killed.returncode == KILLED, killed.stderr
    sqlite_intact(settings)
    restarted = start_child(settings, {**base, "paced": True, "clock_offset": 3600}, stdin=subprocess.PIPE)
    try:
        read_until(restarted, "pause 1")
        count = processed_exactly_once(settings)
        entries = [json.loads(line) for line in (out / "kb_entries.ndjson").read_text().splitlines()]
        assert sum(e["type"] == "message" for e in entries) == count
    finally:
        stop(restarted)
    assert restarted.returncode == 0, restarted.stderr.read()
    no_run_left_running(settings)
    sqlite_intact(settings)


@pytest.mark.slow
def test_worker_killed_mid_run_resumes_cleanly(settings, tmp_path):
    """`tg-parser worker` is killed inside a queued process run; a worker started after the lease lapsed
    fails that run, then executes the next queued run, which processes every message exactly once."""
    import_example(settings)
    db = open_database(settings)
    try:
        queue = RunQueueStore(db)
        options = {"processor": "extractive", "out_dir": str(tmp_path / "out")}

        def enqueue(run_id: str) -> None:
            queue.enqueue(
                run_id, ["process"], source_id=None, options=options, requested_by="t", webhook_url=None
            )

        enqueue("doomed")
        spec = {"marks": ["tg_parser.stores.processing:ProcessingStore.upsert_documents"], "argv": ["worker"]}
        killed = run_child(settings, {**spec, "kill_at": 2}, WORKER_POLL_SECONDS="0.05")
        assert killed.returncode == KILLED, killed.stderr
        sqlite_intact(settings)
        assert queue.get("doomed")["status"] == "running"
        restarted = start_child(settings, {**spec, "clock_offset": 3600}, WORKER_POLL_SECONDS="0.05")
        try:
            wait_for(lambda: queue.get("doomed")["status"] == "failed", 60, "the lapsed run to be failed")
            assert "lease" in queue.get("doomed")["error"]
            enqueue("again")
            wait_for(lambda: queue.get("again")["status"] not in ("queued", "running"), 60, "the next run")
            assert queue.get("again")["status"] == "succeeded", queue.get("again")
            processed_exactly_once(settings)
        finally:
            stop(restarted)
        assert restarted.returncode == 0, restarted.stderr.read()
    finally:
        db.close()
    # The killed worker's cycle report (kind run) and its process step's report were both abandoned.
    abandoned = {r.kind for r in no_run_left_running(settings)}
    assert abandoned == {"run", "process"}, abandoned
    sqlite_intact(settings)


# --- the migrator killed mid-COPY --------------------------------------------------------------------


def group_alive(pgid: int) -> list[int]:
    """Processes still in the process group `pgid` (the migrator and its helpers)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                alive.append(int(entry.name))
    return alive


@pytest.mark.slow
def test_migrator_killed_mid_copy_leaves_the_target_unchanged_and_a_rerun_succeeds(
    sqlite_dir, pg_dbname, tmp_path
):
    source = sqlite_settings(sqlite_dir)
    write_export(tmp_path / "export.json", SEED, 2)
    result = CliRunner().invoke(
        cli, ["ingest", "--from-export", str(tmp_path / "export.json")], env=db_env(source)
    )
    assert result.exit_code == 0, result.output
    import_example(source)
    from conftest import pg_settings

    target = pg_settings(pg_dbname)
    dsn = f"postgresql://{target.db_user}@{target.db_host}:{target.db_port}/{target.db_name}"
    before = database_checksums(target)["tables"]
    argv = ["db", "migrate-to-postgres", "--to", dsn, "--batch-size", "20", "--workers", "2"]
    spec = {"marks": ["tg_parser.transfer.source:SqliteSource.feed_batches"], "argv": argv}
    point = random.Random(f"{SEED}-migrate").randint(3, 30)
    proc = start_child(source, {**spec, "kill_at": point})
    try:
        proc.wait(timeout=120)
        assert proc.returncode == KILLED, proc.stderr.read()
        # The helpers notice their parent is gone and end; nothing is left running.
        wait_for(lambda: not group_alive(proc.pid), 30, "the migrator's helpers to end")
    finally:
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
    sqlite_intact(source)

    def backends() -> int:
        with psycopg.connect(
            host=target.db_host, port=target.db_port, user=target.db_user, dbname="postgres"
        ) as c:
            row = c.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [target.db_name],
            ).fetchone()
            return row[0]

    wait_for(lambda: backends() == 0, 30, "the killed migrator's backend to end")
    assert database_checksums(target)["tables"] == before  # the target is unchanged
    rerun = run_child(source, {"argv": [*argv, "--json", "--silent"]})
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert json.loads(rerun.stdout)["status"] == "ok"
    assert database_checksums(target)["tables"] == database_checksums(source)["tables"]


@pytest.mark.slow
def test_ingest_killed_between_a_threads_last_comments_and_its_floor_then_rerun_equals_reference(
    settings, sqlite_template, tmp_path, monkeypatch
):
    """A kill right after a backfilled thread's last comments are committed (cursor = its newest comment)
    and before its cursor moves to the stream's floor: the re-run re-reads that post with its reply
    counter (newest comment = the cursor), and must still move the thread's cursor to the floor, as an
    uninterrupted run does (found by the seeded kills above: thread cursor 238, reference 338)."""
    reference = fresh_sqlite(sqlite_template, tmp_path / "reference")
    ref_env = {k: v for k, v in child_env(reference).items() if k.startswith(("TELEGRAM_", "INGEST_"))}
    add_telegram_sources(reference)
    add_telegram_sources(settings)
    spec = {"world": {"seed": SEED, "phase": 1}, "telegram_marks": True, "marks": INGEST_MARKS,
            "argv": ["ingest", "--all"]}  # fmt: skip
    lines = reference_marks(reference, spec, monkeypatch, ref_env)
    expected = snapshot(reference)
    labels = [line.split()[2] for line in lines]
    # a thread's last chunk committed (its cursor advanced to its newest comment; on PostgreSQL the
    # transaction commits after the `after` mark), then the floor advance: killed at the latter's `before`
    points = [
        n + 2
        for n in range(len(labels) - 1)
        if labels[n] == "IngestionStore.advance_comment_cursor:after"
        and labels[n + 1] == "IngestionStore.advance_comment_cursor:before"
    ]
    assert points, "a thread read to its end below the floor"
    # the last such thread: its post is among the newest ones the re-run re-reads (with its counters)
    killed = run_child(settings, {**spec, "kill_at": points[-1]})
    assert killed.returncode == KILLED, killed.stderr
    behind = snapshot(settings)["cursors"]["newsfeed"]
    assert 0 < len(set(behind) - set(expected["cursors"]["newsfeed"])) == 1, "one thread cursor left behind"
    finished = run_child(settings, spec)
    assert finished.returncode == 0, finished.stderr
    state = snapshot(settings)
    for key in ("messages", "versions", "sources", "cursors"):
        assert state[key] == expected[key], f"{key} differ"
