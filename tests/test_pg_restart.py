"""PostgreSQL restarts under real tg-parser processes: `process`, `ingest` and `serve` while the server
stops and starts again.

The server is a cluster of this test process's own (pg_createcluster on a free port, started and stopped
with pg_ctlcluster, dropped at the end, also on failure), never the shared server the other tests use.
Each test gets a database cloned from a migrated template in that cluster.

The CLI processes run through support/crash_child.py with `pause_at`: the process stops at a known mark
(a store call, a processor call) and waits while the test stops the server ("down": it goes on against
a dead server) or stops and starts it ("restart": it goes on against a restarted server whose old
connections are all broken). Either the run goes on and finishes, or it exits non-zero with one clear
line (no traceback) and leaves nothing half-written; a re-run then completes the set exactly as an
uninterrupted run would.

Without pg_createcluster (or the rights to run it) the tests skip with the reason, unless
TG_PARSER_REQUIRE_POSTGRES=1, where they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import REQUIRE_PG, sqlite_settings
from support.api_server import Client, ServeProcess, free_port, new_key, wait_for
from support.child_runs import (
    add_telegram_sources,
    child_env,
    processed_exactly_once,
    read_until,
    reference_run,
    snapshot,
    start_child,
)
from support.cli import db_env
from support.process_data import seed_messages

from tg_parser.config import Settings, load_settings
from tg_parser.db import migrations
from tg_parser.db.connect import open_database
from tg_parser.db.locks import CONNECTION_BROKE
from tg_parser.db.sqlite import STORE_FILES
from tg_parser.domain.models import Source
from tg_parser.stores import IngestionStore, ProcessingStore

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

PREFIX = "tgp_restart_"
# Short enough that a process meeting the outage in the pool gives up soon; the connect timeout bounds
# each reconnect attempt.
POOL_TIMEOUT = 3.0
DB_ENV = {"DB_POOL_TIMEOUT": str(POOL_TIMEOUT), "DB_CONNECT_TIMEOUT": "2"}
EXIT_UNAVAILABLE = 3  # DatabaseUnavailable's exit code
EXIT_FAILURE = 1
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ \| WARNING \| ")


def _run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def _version() -> str | None:
    root = Path("/usr/lib/postgresql")
    versions = sorted(
        (p.name for p in root.iterdir() if (p / "bin" / "pg_ctl").exists()) if root.is_dir() else (),
        key=lambda v: [int(part) for part in re.findall(r"\d+", v)],
    )
    return versions[-1] if versions else None


def _drop_stale_clusters(version: str) -> None:
    """Clusters a killed test process of this module left behind (its pid is in the name)."""
    listing = _run("pg_lsclusters", "-h")
    for line in listing.stdout.splitlines():
        fields = line.split()
        if len(fields) > 1 and fields[0] == version and fields[1].startswith(PREFIX):
            pid = fields[1][len(PREFIX) :]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                _run("pg_dropcluster", "--stop", version, fields[1])


@dataclass
class Cluster:
    version: str
    name: str
    port: int
    databases: list[str] = field(default_factory=list)

    def _ctl(self, action: str, *args: str) -> None:
        done = _run("pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, action, *args)
        assert done.returncode == 0, f"pg_ctlcluster {action}: {done.stdout}{done.stderr}"

    def start(self) -> None:
        self._ctl("start")
        wait_for(self.accepts, 30, interval=0.05, what=f"cluster {self.name} to accept connections")

    def stop(self, mode: str = "fast") -> None:
        """`fast` ends the sessions and shuts down cleanly; `immediate` is a crash (recovery at start)."""
        self._ctl("stop", "-m", mode)

    def accepts(self) -> bool:
        try:
            psycopg.connect(**self.connect_kwargs("postgres"), connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def connect_kwargs(self, dbname: str) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": self.port, "user": "postgres", "dbname": dbname}

    def settings(self, dbname: str) -> Settings:
        return load_settings(
            _env_file=None,
            db_type="postgres",
            db_host="127.0.0.1",
            db_port=self.port,
            db_user="postgres",
            db_name=dbname,
            db_pool_min_size=1,
            db_pool_max_size=4,
            db_pool_timeout=POOL_TIMEOUT,
            db_connect_timeout=2,
        )

    def new_database(self) -> Settings:
        """A migrated, empty database: a clone of the template."""
        name = f"t{len(self.databases) + 1}"
        with psycopg.connect(**self.connect_kwargs("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template_tgp")
        self.databases.append(name)
        return self.settings(name)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    version = _version()
    missing = [
        tool for tool in ("pg_createcluster", "pg_ctlcluster", "pg_dropcluster") if not shutil.which(tool)
    ]
    problem = None
    if missing or version is None:
        problem = f"needs PostgreSQL's cluster tools ({', '.join(missing) or 'no server version found'})"
    elif os.geteuid() != 0:
        problem = "pg_createcluster needs root (or the postgres user) to create a test cluster"
    if problem:
        if REQUIRE_PG:
            pytest.fail(problem + " (TG_PARSER_REQUIRE_POSTGRES=1 forbids skipping)")
        pytest.skip(problem)
    assert version is not None
    _drop_stale_clusters(version)
    cluster = Cluster(version, f"{PREFIX}{os.getpid()}", free_port())
    try:
        # A tiny, non-durable cluster: nothing in it has to survive the machine, and crash recovery
        # after `stop -m immediate` still replays the WAL.
        created = _run(
            "pg_createcluster", version, cluster.name, "-p", str(cluster.port), "-q",
            "--start-conf=manual", "-o", "shared_buffers=16MB", "-o", "fsync=off",
            "-o", "full_page_writes=off", "-o", "max_connections=50", "--", "--auth=trust", "-N",
        )  # fmt: skip
        assert created.returncode == 0, f"pg_createcluster: {created.stdout}{created.stderr}"
        cluster.start()
        with psycopg.connect(**cluster.connect_kwargs("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE template_tgp")
        migrations.upgrade(cluster.settings("template_tgp"))
        yield cluster
    finally:
        _run("pg_dropcluster", "--stop", version, cluster.name)


@pytest.fixture
def pg(cluster: Cluster) -> Iterator[Settings]:
    """A fresh database in the cluster, and the cluster running again after the test whatever it did."""
    settings = cluster.new_database()
    try:
        yield settings
    finally:
        if not cluster.accepts():
            cluster.start()


# --- what a process prints --------------------------------------------------------------------------


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """Let a paused child go on; its exit code and stderr once it ends."""
    _, err = proc.communicate("go\n", timeout=90)
    return proc.returncode, err


def through_outage(
    cluster: Cluster,
    proc: subprocess.Popen[str],
    pause_at: int,
    outage: str,
    at_pause: Callable[[], Any] = lambda: None,
) -> tuple[int, str, Any]:
    """Once the child is paused at `pause_at` (and `at_pause` has looked at the database): `restart`
    stops and starts the server, then lets the child go on; `down` crashes the server, lets the child go
    on against it, and starts the server once the child has ended. The child's exit code and stderr, and
    what `at_pause` returned."""
    try:
        read_until(proc, f"paused {pause_at}", timeout=90)
        seen = at_pause()
        if outage == "restart":
            cluster.stop("fast")
            cluster.start()
            return (*finish(proc), seen)
        cluster.stop("immediate")
        code, err = finish(proc)
        cluster.start()
        return code, err, seen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def assert_whole_lines(err: str) -> list[str]:
    """No traceback, and nothing on stderr but whole log lines (the pool's warnings about its reconnect
    attempts among them), the processor's choice and "Error:" lines; returns the latter."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    others = [line for line in lines if line not in errors and not line.startswith("processor: ")]
    assert all(LOG_LINE.match(line) for line in others), others
    return errors


def assert_one_clear_line(code: int, err: str, codes: tuple[int, ...] = (EXIT_UNAVAILABLE,)) -> str:
    """A run the outage stopped: a non-zero exit (3, database unavailable, unless `codes` says otherwise)
    and one error line naming the database."""
    errors = assert_whole_lines(err)
    assert code in codes, (code, err)
    assert len(errors) == 1, err
    assert "PostgreSQL" in errors[0] and "127.0.0.1" in errors[0], errors[0]
    return errors[0]


# --- process -----------------------------------------------------------------------------------------


def queue_and_documents(settings: Settings) -> tuple[set[str], set[str], set[str]]:
    """(every raw message, the queued ones, the documented ones), read in one snapshot."""
    with psycopg.connect(**settings_kwargs(settings)) as conn, conn.transaction():
        refs = {r[0] for r in conn.execute("SELECT source_ref FROM raw.raw_messages")}
        queued = {r[0] for r in conn.execute("SELECT source_ref FROM raw.pending_work")}
        documented = {r[0] for r in conn.execute("SELECT source_ref FROM processing.processed_documents")}
    return refs, queued, documented


def settings_kwargs(settings: Settings) -> dict[str, Any]:
    return {
        "host": settings.db_host,
        "port": settings.db_port,
        "user": settings.db_user,
        "dbname": settings.db_name,
    }


PROCESS = ["process", "--processor", "extractive", "--concurrency", "1"]
RUN = ["run", "--processor", "extractive"]
WRITE = "tg_parser.processing.coordinator:ProcessCoordinator._write"
UPSERT = "tg_parser.stores.processing:ProcessingStore.upsert_documents"


@pytest.mark.parametrize(
    ("outage", "mark", "pause_at", "argv"),
    [
        # The coordinator paused before its second batch write (no transaction open; the first batch
        # committed, its connection back in the pool): the server restarts.
        ("restart", WRITE, 3, PROCESS),
        # Paused inside a batch's write transaction, its documents written but not committed: the
        # server crashes, and the process goes on against a dead server.
        ("down", UPSERT, 2 * 2, PROCESS),
        # The same outage under `tg-parser run` (its process step).
        ("down", UPSERT, 2 * 2, RUN),
    ],
    ids=["process-restart", "process-down", "run-down"],
)
def test_process_across_a_restart(cluster, pg, outage, mark, pause_at, argv, tmp_path):
    db = open_database(pg)
    try:
        # An export source (nothing to fetch: `run` goes straight to processing its messages).
        IngestionStore(db).add_source(Source(source_id="export-100", channel_id=100, kind="export"))
        seed_messages(db, 4200, source_id="export-100")  # the extractive processor writes 2000 a batch
    finally:
        db.close()
    if argv[0] == "run":
        argv = [*argv, "--out", str(tmp_path / "out")]
    spec = {"marks": [mark], "pause_at": pause_at, "argv": argv}
    proc = start_child(pg, spec, stdin=subprocess.PIPE, **DB_ENV)
    code, err, (refs, queued, committed) = through_outage(
        cluster, proc, pause_at, outage, lambda: queue_and_documents(pg)
    )
    assert committed and queued, f"paused mid-run: {len(refs)} {len(queued)} {len(committed)}"
    if code == 0:
        assert "Traceback" not in err, err
        processed_exactly_once(pg)
        return
    if argv[0] == "run":
        # `run` goes on with its other steps (each fails the same way) and exits 1, its steps' outcome
        # in one log line each.
        assert code == EXIT_FAILURE and not assert_whole_lines(err), (code, err)
        assert "process: FAILED (DatabaseUnavailable: cannot connect to PostgreSQL" in err, err
    else:
        # The database went away mid-run: the work ran and failed (exit 1, as `ingest` and `run`), not
        # the configuration error (3) of a database unreachable from the start.
        line = assert_one_clear_line(code, err, codes=(EXIT_FAILURE,))
        assert line.startswith("Error: the database went away during the run: "), line
    # Nothing half-written: a message is documented and out of the queue, or queued without a document;
    # the batch that was in its transaction at the crash is not there.
    refs, queued, documented = queue_and_documents(pg)
    assert not queued & documented
    assert queued | documented == refs
    if outage == "down":
        assert documented == committed
    # A re-run after the dead run's leases lapsed completes the set and fails the dead run.
    rerun = start_child(pg, {"argv": [*PROCESS, "--json"], "clock_offset": 3600})
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    processed_exactly_once(pg)
    db = open_database(pg)
    try:
        runs = ProcessingStore(db).recent_runs(limit=100)
    finally:
        db.close()
    statuses = sorted(r.status for r in runs if r.kind == "process")
    assert statuses == ["failed", "ok"], [(r.kind, r.status, r.error) for r in runs]
    assert not [r for r in runs if r.status == "running"], [(r.kind, r.status, r.error) for r in runs]


# --- ingest ------------------------------------------------------------------------------------------

INGEST_MARKS = [
    "tg_parser.stores.raw:RawStore.store_batch",
    "tg_parser.stores.ingestion:IngestionStore.advance_post_cursor",
    "tg_parser.stores.ingestion:IngestionStore.advance_comment_cursor",
]


@pytest.mark.parametrize(
    ("outage", "hooks"),
    [
        # Paused on a Telegram request (no transaction open): the server restarts.
        ("restart", {"telegram_marks": True}),
        # Paused before a batch's rows and cursor are written (their transaction open): the server
        # crashes, and the process goes on against a dead server.
        ("down", {"marks": INGEST_MARKS}),
    ],
)
def test_ingest_across_a_restart_then_rerun_equals_an_uninterrupted_run(
    cluster, pg, outage, hooks, sqlite_template, tmp_path, monkeypatch
):
    spec = {"world": {"seed": 7}, **hooks, "argv": ["ingest", "--all"]}
    reference = tmp_path / "reference"
    reference.mkdir()
    for name in STORE_FILES.values():
        shutil.copy(sqlite_template / name, reference / name)
    ref_settings = sqlite_settings(reference)
    add_telegram_sources(ref_settings)
    ref_env = {k: v for k, v in child_env(ref_settings).items() if k.startswith(("TELEGRAM_", "INGEST_"))}
    marks = reference_run(ref_settings, spec, monkeypatch, ref_env)
    expected = snapshot(ref_settings)

    add_telegram_sources(pg)
    pause_at = marks // 2
    proc = start_child(pg, {**spec, "pause_at": pause_at}, stdin=subprocess.PIPE, **DB_ENV)
    code, err, _ = through_outage(cluster, proc, pause_at, outage)
    if code != 0:
        # A source the outage stopped fails (exit 1, retried by the next run) while the others go on; a
        # restart also breaks the connections holding the source and session locks, so the run stops at
        # its next batch with the lock-lost line instead (exit 1) rather than going on unlocked.
        errors = assert_whole_lines(err)
        assert code in (EXIT_FAILURE, EXIT_UNAVAILABLE) and len(errors) == 1, (code, err)
        lost = "lost the lock '" in errors[0] and f"({CONNECTION_BROKE})" in errors[0]
        assert lost or ("PostgreSQL" in errors[0] and "127.0.0.1" in errors[0]), errors[0]
        state = snapshot(pg)
        for ref, row in state["messages"].items():
            assert row == expected["messages"][ref], f"half-written {ref}"
        rerun = start_child(pg, spec, **DB_ENV)
        _, err = rerun.communicate(timeout=120)
        assert rerun.returncode == 0, err
    assert "Traceback" not in err, err
    state = snapshot(pg)
    for key in ("messages", "versions", "sources", "cursors", "pending"):
        assert state[key] == expected[key], f"{outage}: {key} differ"


# --- serve under load --------------------------------------------------------------------------------

DATA_ROUTES = ("/api/v1/sources", "/api/v1/documents?limit=5", "/api/v1/messages?limit=5")
# No request may take longer than this: the pool's timeout and the readiness ping's, plus room for a
# loaded machine. A request still unanswered then is a hang (the client's socket timeout).
REQUEST_DEADLINE = 20.0


@dataclass
class Load:
    """Threads sending requests in a loop; every answer recorded with the phase it was sent in."""

    client: Client
    phase: str = "up"
    answers: list[tuple[str, str, int, bytes]] = field(default_factory=list)
    hangs: list[tuple[str, str, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _loop(self, paths: tuple[str, ...]) -> None:
        while not self.stop.is_set():
            for path in paths:
                phase = self.phase
                try:
                    answer = self.client.get(path)
                except OSError as exc:  # the socket timeout included: a request that hung
                    with self.lock:
                        self.hangs.append((phase, path, f"{type(exc).__name__}: {exc}"))
                    continue
                with self.lock:
                    self.answers.append((phase, path, answer.status, answer.body))

    def start(self, threads: int = 3) -> list[threading.Thread]:
        started = []
        for i in range(threads):
            paths = DATA_ROUTES[i:] + DATA_ROUTES[:i]
            thread = threading.Thread(target=self._loop, args=(paths,), daemon=True)
            thread.start()
            started.append(thread)
        return started

    def count(self, phase: str, status: int) -> int:
        with self.lock:
            return sum(1 for p, _, s, _ in self.answers if p == phase and s == status)

    def since(self, index: int) -> list[tuple[str, str, int, bytes]]:
        with self.lock:
            return self.answers[index:]


def test_serve_under_load_across_a_restart(cluster, pg, tmp_path):
    db = open_database(pg)
    try:
        seed_messages(db, 30)
        token = new_key(db, "reader")
    finally:
        db.close()
    env = {**db_env(pg), **DB_ENV, "LOG_LEVEL": "WARNING", "API_RATE_LIMIT_READ": "1000000"}
    with ServeProcess(env, "serve", log=tmp_path / "serve.log", cwd=tmp_path) as server:
        server.wait_healthy()
        probe = Client("127.0.0.1", server.port, timeout=REQUEST_DEADLINE)
        wait_for(lambda: probe.get("/ready").status == 200, 30, interval=0.1, what="/ready 200")
        load = Load(Client("127.0.0.1", server.port, token, timeout=REQUEST_DEADLINE))
        threads = load.start()
        try:
            wait_for(lambda: load.count("up", 200) >= 20, 30, interval=0.05, what="answers before the stop")
            load.phase = "down"
            cluster.stop("fast")
            ready = wait_for(
                lambda: (a := probe.get("/ready")).status == 503 and a, 30, interval=0.1, what="/ready 503"
            )
            assert ready.json()["ready"] is False and "cannot connect" in ready.json()["error"], ready
            assert probe.get("/health").status == 200
            wait_for(lambda: load.count("down", 503) >= 6, 30, interval=0.05, what="503s while down")
            cluster.start()
            wait_for(lambda: probe.get("/ready").status == 200, 30, interval=0.1, what="/ready 200 again")
            load.phase = "back"
            # The pool replaced its broken connections: the data routes answer again, and keep answering.
            mark = len(load.since(0))
            wait_for(lambda: load.count("back", 200) >= 30, 30, interval=0.05, what="200s after the restart")
            settled = [a for a in load.since(mark) if a[0] == "back"]
        finally:
            load.stop.set()
            for thread in threads:
                thread.join(timeout=REQUEST_DEADLINE + 5)
        assert not load.hangs, load.hangs[:5]
        for phase, path, status, body in load.answers:
            if status == 200:
                continue
            assert status == 503, (phase, path, status, body[:300])
            error = json.loads(body)["error"]
            assert error["code"] == "unavailable" and "Traceback" not in error["message"], error
            assert phase != "up", (path, body[:300])
        # After the first 200 of a route past the restart, that route never fails again.
        seen_ok: set[str] = set()
        for _, path, status, body in settled:
            if status == 200:
                seen_ok.add(path)
            else:
                assert path not in seen_ok, (path, status, body[:300])
        assert probe.get("/ready").status == 200
        code = server.terminate()
    log = server.output()
    assert code == 0, log
    assert "Traceback" not in log, log
