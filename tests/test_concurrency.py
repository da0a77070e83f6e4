"""Concurrency and pool exhaustion (issue 15, item 4): real `tg-parser` processes on one database at once.

* Seven processes — three `ingest` of Telegram sources, each with its own session (two of them of the same
  source: the per-source lock), an export import, two `process` and one `topicize` — run against one
  database (PostgreSQL, and SQLite with its busy timeout) while `tg-parser serve` answers
  concurrent HTTP clients on the data routes. Nothing deadlocks (every process ends within a deadline);
  every raw message is stored once, with the rows, versions and cursors of the same ingests run one after
  the other (the reference, on a fresh SQLite install); every message is processed once (the run reports'
  counters add up to the documents written, and nothing is left pending); the ingestion journal's counters
  equal the rows written; every API answer is 2xx and the paged totals equal the stored rows.
* With `DB_POOL_MAX_SIZE=1` and more concurrent work than one connection, work either goes through the
  single connection in turn, or fails with one line naming DB_POOL_MAX_SIZE and DB_POOL_TIMEOUT
  (exit non-zero on the CLI, HTTP 503 with a JSON error on the API); nothing hangs and nothing logs a
  traceback.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import subprocess
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from support.api_server import Client, ServeProcess, new_key, seed_example, wait_for
from support.child_runs import SEED, add_telegram_sources, import_example, start_child
from support.cli import db_env
from support.crash_child import telegram_env
from support.llm_server import LlmServer
from support.process_data import seed_messages
from telethon.crypto import AuthKey
from telethon.sessions import StringSession
from test_crash_kill import fresh_sqlite, reference_run, snapshot, write_export

from tg_parser.cli.main import cli
from tg_parser.config import Settings
from tg_parser.db.connect import open_database
from tg_parser.db.sqlite import STORE_FILES

DEADLINE = 240  # seconds for the whole crowd to finish: far beyond a normal run, far short of a hang
WORLD = {"seed": SEED, "size": 120}
NEWS, SMALL = "newsfeed", "smallchan"
OFFLINE = ["--processor", "extractive"]
READ_ROUTES = [
    "/api/v1/messages?limit=200",
    f"/api/v1/messages?channel={NEWS}&limit=50",
    "/api/v1/documents?limit=200",
    "/api/v1/topics",
    "/api/v1/sources",
    "/api/v1/runs",
]


def telegram_session(n: int) -> dict[str, str]:
    """A logged-in Telegram session of its own (auth key n): one session is one connection to Telegram,
    and its lock lets one process use it at a time, so concurrent ingests each get their own."""
    session = StringSession()
    session.set_dc(2, "149.154.167.51", 443)
    session.auth_key = AuthKey(bytes((i + n) % 256 for i in range(256)))
    return {"TELEGRAM_SESSION": StringSession.save(session)}


def rows(settings: Settings, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """What the database holds, read on a connection of the test's own (not through tg-parser); on SQLite
    the three store files attached under their schema names, as tg-parser attaches them."""
    if settings.db_type == "sqlite":
        conn = sqlite3.connect(":memory:")
        try:
            for store, name in STORE_FILES.items():
                conn.execute(f"ATTACH DATABASE ? AS {store}", (str(settings.db_sqlite_dir / name),))
            return conn.execute(query.replace("%s", "?"), params).fetchall()
        finally:
            conn.close()
    with psycopg.connect(
        host=settings.db_host, port=settings.db_port, user=settings.db_user, dbname=settings.db_name
    ) as conn:
        return conn.execute(query, params).fetchall()


def page_all(client: Client, path: str) -> list[dict[str, Any]]:
    """Every item of a keyset-paged route, following `next` to the end."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        answer = client.get(path, params={"limit": 500, **({"cursor": cursor} if cursor else {})})
        assert answer.status == 200, answer
        body = answer.json()
        items += body["items"]
        cursor = body["next"]
        if not cursor:
            return items
    raise AssertionError(f"{path}: more than 1000 pages")


class ApiLoad:
    """`threads` clients reading the data routes in turn until stopped, each at most `limit` requests."""

    def __init__(self, client: Client, threads: int = 4, limit: int = 400) -> None:
        self.client = client
        self.limit = limit
        self.stop = threading.Event()
        self.answers: list[tuple[str, int, bytes]] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._read, args=(n,), daemon=True) for n in range(threads)]

    def _read(self, n: int) -> None:
        routes = itertools.islice(itertools.cycle(READ_ROUTES), n, None)
        for path in itertools.islice(routes, self.limit):
            if self.stop.is_set():
                return
            try:
                answer = self.client.get(path)
            except Exception as exc:  # a timeout or a reset is a failed answer, not a silently dead client
                with self._lock:
                    self.answers.append((path, -1, repr(exc).encode()[:300]))
                continue
            with self._lock:
                self.answers.append((path, answer.status, answer.body[:300]))

    def __enter__(self) -> ApiLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
            assert not thread.is_alive(), "an API client is stuck"


def finish(procs: dict[str, subprocess.Popen[str]], timeout: float) -> dict[str, tuple[int, str, str]]:
    """Each process's (exit code, stdout, stderr), all read at once so no pipe fills; a process still
    running after `timeout` seconds is a hang: the test fails (the processes are killed)."""
    results: dict[str, tuple[int, str, str]] = {}

    def wait(name: str) -> None:
        out, err = procs[name].communicate(timeout=timeout)
        results[name] = (procs[name].returncode, out, err)

    try:
        with ThreadPoolExecutor(len(procs)) as pool:
            for future in [pool.submit(wait, name) for name in procs]:
                future.result()
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"still running after {timeout} s (a deadlock?): {exc.cmd}") from None
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ingest_process_topicize_and_the_api_at_once_on_one_database(
    settings, sqlite_template, tmp_path, monkeypatch
):
    import_example(settings)  # documents to process and topicize from the first moment on
    add_telegram_sources(settings)
    db = open_database(settings)
    try:
        token = new_key(db, "reader")
    finally:
        db.close()
    export = write_export(tmp_path / "export.json", SEED, 1)
    ingest = {
        "ingest-news-1": ["ingest", "--source", NEWS, "--json", "--silent"],
        "ingest-news-2": ["ingest", "--source", NEWS, "--json", "--silent"],
        "ingest-small": ["ingest", "--source", SMALL, "--json", "--silent"],
        "ingest-export": ["ingest", "--from-export", str(export), "--json", "--silent"],
    }
    work = {
        "process": ["process", *OFFLINE, "--concurrency", "4", "--json", "--silent"],
        "process-2": ["process", *OFFLINE, "--concurrency", "2", "--json", "--silent"],
        "topicize": ["topicize", *OFFLINE, "--json"],
    }
    env = {**db_env(settings), "LOG_LEVEL": "WARNING", "API_RATE_LIMIT_READ": "1000000"}
    with ServeProcess(env, "serve", log=tmp_path / "serve.log", cwd=tmp_path) as server:
        server.wait_healthy(60)
        client = Client("127.0.0.1", server.port, token, timeout=60)
        with ApiLoad(client) as load:
            procs = {
                # SQLite's busy wait polls rather than queues: a generous one, so a writer starved on a
                # loaded machine waits instead of failing; the DEADLINE still catches a hang.
                name: start_child(
                    settings,
                    {"world": WORLD, "argv": argv},
                    **telegram_session(n),
                    DB_SQLITE_BUSY_TIMEOUT=str(DEADLINE * 1000),
                )
                for n, (name, argv) in enumerate({**ingest, **work}.items())
            }
            results = finish(procs, DEADLINE)
        answers = load.answers
        exits = {name: result[0] for name, result in results.items()}
        print(f"\n{settings.db_type}: exit codes {exits}; {len(answers)} API answers under load")
        for name, (_, _, err) in results.items():
            assert "Traceback" not in err, (name, err)
        # The two ingests of one source: both succeed one after the other, or one is refused by the lock.
        codes = sorted(results[name][0] for name in ("ingest-news-1", "ingest-news-2"))
        assert codes in ([0, 0], [0, 4]), results
        for name in ("ingest-news-1", "ingest-news-2"):
            if results[name][0] == 4:
                assert "source 'newsfeed' is being ingested by another run" in results[name][2]
                assert results[name][2].count("\n") == 1, results[name][2]
        for name in ("ingest-small", "ingest-export", "process", "process-2", "topicize"):
            assert results[name][0] == 0, (name, results[name])

        # What `process` could not see yet (ingested after it selected its work) is processed now.
        done = CliRunner().invoke(cli, ["process", *OFFLINE, "--silent"], env=db_env(settings))
        assert done.exit_code == 0, done.output

        # The API: every answer under load was a success; the paged totals are the stored rows.
        statuses = Counter(status for _, status, _ in answers)
        failed = [a for a in answers if not 200 <= a[1] < 300]
        assert not failed, (statuses, failed[:5])
        assert len(answers) >= len(READ_ROUTES), statuses
        (raw_count,) = rows(settings, "SELECT count(*) FROM raw.raw_messages")[0]
        (doc_count,) = rows(settings, "SELECT count(*) FROM processing.processed_documents")[0]
        (topic_count,) = rows(settings, "SELECT count(*) FROM processing.topic_cards")[0]
        messages = page_all(client, "/api/v1/messages")
        assert len(messages) == raw_count
        assert len({m["source_ref"] for m in messages}) == raw_count
        assert len(page_all(client, "/api/v1/documents")) == doc_count
        assert len(page_all(client, "/api/v1/topics")) == topic_count
        assert server.terminate(timeout=30) == 0, server.output()[-3000:]
    assert "Traceback" not in server.output(), server.output()[-3000:]

    # Raw rows, versions and cursors: those of the same ingests run one after the other.
    reference = fresh_sqlite(sqlite_template, tmp_path / "reference")
    import_example(reference)
    add_telegram_sources(reference)
    quiet = {"LOG_LEVEL": "WARNING", "INGEST_BATCH_SIZE": "50"}
    for argv in ingest.values():
        reference_run(reference, {"world": WORLD, "argv": argv}, monkeypatch, {**telegram_env(), **quiet})
    got, want = snapshot(settings), snapshot(reference)
    assert got["messages"].keys() == want["messages"].keys()
    assert got["messages"] == want["messages"]
    assert got["versions"] == want["versions"]
    assert got["sources"] == want["sources"]
    assert got["cursors"] == want["cursors"]
    # Each cursor is the newest post stored for its channel.
    for source_id, (channel_id, kind, _, cursor, _) in got["sources"].items():
        if kind == "telegram":
            (newest,) = rows(
                settings,
                "SELECT max(message_id) FROM raw.raw_messages WHERE channel_id = %s AND message_type = 'post'",
                (channel_id,),
            )[0]
            assert cursor == newest, source_id

    # The ingestion journal: one finished attempt per ingest that ran, its counters the rows written.
    ran = Counter(argv[2] for name, argv in ingest.items() if results[name][0] == 0)
    for source_id in (NEWS, SMALL):
        attempts = rows(
            settings,
            "SELECT success, posts_inserted, comments_inserted FROM ingestion.ingest_runs WHERE source_id = %s",
            (source_id,),
        )
        assert len(attempts) == ran[source_id] and all(a[0] for a in attempts), attempts
        posts, comments = rows(
            settings,
            "SELECT count(*) FILTER (WHERE message_type = 'post'), count(*) FILTER (WHERE message_type = 'comment')"
            " FROM raw.raw_messages WHERE source_id = %s",
            (source_id,),
        )[0]
        assert (sum(a[1] for a in attempts), sum(a[2] for a in attempts)) == (posts, comments), source_id

    # Processing: each message handled by exactly one run (documents written once, no work lost).
    runs = [
        (status, json.loads(counts) if isinstance(counts, str) else counts)
        for status, counts in rows(
            settings, "SELECT status, counts FROM processing.runs WHERE kind = 'process'"
        )
    ]
    assert len(runs) == 3 and all(status == "ok" for status, _ in runs), runs
    processed = sum(counts["processed"] for _, counts in runs)
    handled = processed + sum(counts["skipped_no_text"] for _, counts in runs)
    assert processed == doc_count
    assert handled == raw_count
    assert rows(settings, "SELECT count(*) FROM raw.pending_work") == [(0,)]
    assert rows(settings, "SELECT count(*) FROM processing.work_leases") == [(0,)]


# --- DB_POOL_MAX_SIZE=1 --------------------------------------------------------------------------------

ONE_CONNECTION = {"DB_POOL_MIN_SIZE": "1", "DB_POOL_MAX_SIZE": "1", "DB_POOL_TIMEOUT": "0.5"}


def waiting_on_a_lock(settings: Settings) -> bool:
    """A backend of tg-parser's is waiting for a table lock in the test database."""
    return bool(
        rows(
            settings,
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            " AND application_name = %s",
            (settings.db_application_name,),
        )
    )


@pytest.mark.slow
def test_serve_with_one_pooled_connection_answers_503_naming_the_pool_settings(pg_only_settings, tmp_path):
    """One request holds the API process's only connection (its statement waits for a table lock the test
    holds); every other request meanwhile, the streamed export too, gets a 503 JSON error naming
    DB_POOL_MAX_SIZE and DB_POOL_TIMEOUT after DB_POOL_TIMEOUT, not a hang and not a 200 with a cut
    body. Once the lock goes, the held request answers 200 and the API serves as before."""
    settings = pg_only_settings
    seed_example(settings, tmp_path / "seed-out")
    db = open_database(settings)
    try:
        token = new_key(db, "reader")
    finally:
        db.close()
    # DB_LOCK_TIMEOUT=0: the held request waits for the test's table lock however long the rest takes.
    env = {
        **db_env(settings),
        **ONE_CONNECTION,
        "LOG_LEVEL": "WARNING",
        "API_RATE_LIMIT_READ": "100000",
        "DB_LOCK_TIMEOUT": "0",
    }
    with ServeProcess(env, "serve", log=tmp_path / "serve.log", cwd=tmp_path) as server:
        server.wait_healthy(60)
        client = Client("127.0.0.1", server.port, token, timeout=60)
        assert client.get("/api/v1/messages").status == 200  # the key is known (and cached) now
        blocker = psycopg.connect(
            host=settings.db_host, port=settings.db_port, user=settings.db_user, dbname=settings.db_name
        )
        try:
            blocker.execute("LOCK TABLE raw.raw_messages IN ACCESS EXCLUSIVE MODE")
            with ThreadPoolExecutor(8) as pool:
                held = pool.submit(client.get, "/api/v1/messages")
                wait_for(lambda: waiting_on_a_lock(settings), 60, what="the request to wait on the lock")
                others = [
                    "/api/v1/sources",
                    "/api/v1/documents",
                    "/api/v1/topics",
                    "/api/v1/export/kb.ndjson",
                ]
                refused = list(pool.map(client.get, others * 2))
                ready = client.get("/ready")
                assert not held.done()
                blocker.commit()  # the lock goes: the held request goes on
                answer = held.result(timeout=60)
        finally:
            blocker.close()
        assert answer.status == 200 and len(answer.json()["items"]) == 17, answer
        for path, got in zip(others * 2, refused, strict=True):
            assert got.status == 503, (path, got)
            assert got.headers["content-type"] == "application/json", (path, got)
            message = got.json()["error"]["message"]
            assert "DB_POOL_MAX_SIZE (1)" in message and "within 0.5 s (DB_POOL_TIMEOUT)" in message, message
        assert ready.status == 503 and "within 2 s: all DB_POOL_MAX_SIZE (1)" in ready.body.decode(), ready
        # Served as before: the export is whole.
        for path in ["/ready", *others]:
            assert client.get(path).status == 200, path
        export = client.get("/api/v1/export/kb.ndjson").body
        assert export == (tmp_path / "seed-out" / "kb_entries.ndjson").read_bytes()
        assert server.terminate(timeout=30) == 0, server.output()[-3000:]
    log = server.output()
    assert "Traceback" not in log and "request failed" not in log, log[-3000:]


@pytest.mark.slow
def test_cli_with_one_pooled_connection_serialises_its_work_or_refuses_in_one_line(
    pg_only_settings, tmp_path
):
    """`process` with eight LLM requests in flight and one pooled connection: its threads (claims, lease
    renewals, document writes) take the connection in turn and the run completes. `ingest` needs two
    connections (one holds the source lock): it refuses at once with one line naming DB_POOL_MAX_SIZE,
    exit 3, having written nothing."""
    settings = pg_only_settings
    db = open_database(settings)
    try:
        refs = seed_messages(db, 300)
    finally:
        db.close()
    export = write_export(tmp_path / "export.json", SEED, 1)
    with LlmServer(latency=0.02) as llm:
        env = {**db_env(settings), **ONE_CONNECTION, "LOG_LEVEL": "WARNING", "LLM_MAX_RETRIES": "2"}
        env.update({"OPENAI_BASE_URL": llm.base_url, "LLM_API": "responses", "LLM_MODEL": "gpt-5-mini"})
        procs = {
            "process": start_child(settings, {"argv": ["process", "--concurrency", "8", "--silent"]}, **env),
            "ingest": start_child(settings, {"argv": ["ingest", "--from-export", str(export)]}, **env),
        }
        results = finish(procs, DEADLINE)
    code, out, err = results["process"]
    assert code == 0 and "Traceback" not in err, (code, out, err)
    assert f"{len(refs)} document(s) written" in out, out
    assert rows(settings, "SELECT count(*) FROM processing.processed_documents") == [(len(refs),)]
    code, out, err = results["ingest"]
    assert code == 3 and err.count("\n") == 1, (code, out, err)
    assert "DB_POOL_MAX_SIZE is 1" in err and "set DB_POOL_MAX_SIZE to 2 or more" in err, err
    assert rows(settings, "SELECT count(*) FROM raw.raw_messages") == [(len(refs),)]  # nothing imported
