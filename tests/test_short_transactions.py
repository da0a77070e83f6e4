"""No transaction or cursor stays open across a network call or a slow write (issue 17, item 2).

Long reads (the export, the topicize corpus, the document and raw-channel streams) go in keyset batches,
each its own short statement. The PostgreSQL tests watch `pg_stat_activity` from a separate connection
at the moments that matter: while an LLM request is in flight (from inside the local server's handler),
while the export's writer is busy (from inside a slow sink's `write`), and while an HTTP client reads the
API's kb.ndjson slowly. At those moments no backend of the tool may be inside a transaction.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from conftest import PG_HOST, PG_PORT, PG_USER, pg_settings
from support.api_server import ThreadedApi, new_key, wait_for
from support.llm_server import LlmRequest, LlmServer
from support.process_data import seed_documents
from test_topicize import seed, supporting_handler, topics_handler

from tg_parser.config import Settings
from tg_parser.db.catalog import SqlCatalog
from tg_parser.db.connect import open_database
from tg_parser.domain.models import ProcessedDocument, RawMessage
from tg_parser.export.writer import write_kb_entries
from tg_parser.llm.client import LlmClient
from tg_parser.stores import ProcessingStore, RawStore
from tg_parser.stores.export import ExportStore
from tg_parser.topics.llm import LlmTopicStrategy
from tg_parser.topics.model import TopicGates
from tg_parser.topics.runner import topicize

T0 = datetime(2025, 3, 1, tzinfo=UTC)


# --- keyset batches: the same rows, in the same order, whatever the batch size ---------------------------


def _seed_ties(db: Any) -> None:
    """Three channels; several documents share a message date, so the keyset's source_ref tie-break counts."""
    messages, docs = [], []
    for channel in (-1003, 7, 9):
        for i in range(1, 14):
            date = T0 + timedelta(hours=i // 3)  # three documents per hour
            messages.append(
                RawMessage.build(
                    channel_id=channel, message_type="post", message_id=i, date=date, text=f"t{i}"
                )
            )
            docs.append(
                ProcessedDocument(
                    source_ref=messages[-1].source_ref,
                    channel_id=channel,
                    message_date=date,
                    text_clean=f"text {channel} {i}",
                    model="m",
                    prompt_id="p",
                    pipeline_version="1",
                )
            )
    RawStore(db).store_batch(messages)
    ProcessingStore(db).upsert_documents(docs)


@pytest.mark.parametrize(
    ("channel_id", "since", "until"),
    [
        (None, datetime(1970, 1, 1, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC)),
        (7, datetime(1970, 1, 1, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC)),
        (None, T0 + timedelta(hours=1), T0 + timedelta(hours=3)),
        (-1003, T0 + timedelta(hours=1), T0 + timedelta(hours=4)),
    ],
)
def test_export_batches_give_the_same_rows_at_every_batch_size(db, channel_id, since, until) -> None:
    _seed_ties(db)
    store = ExportStore(db)
    whole = [row for batch in store.document_batches(channel_id, since, until, 100_000) for row in batch]
    assert whole, "the window selects documents"
    keys = [(row[1], row[2], row[0]) for row in whole]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    for size in (1, 2, 3, 7, len(whole), len(whole) + 1):
        batches = list(store.document_batches(channel_id, since, until, size))
        assert all(len(b) == size for b in batches[:-1]) and 0 < len(batches[-1]) <= size
        assert [row for batch in batches for row in batch] == whole, size


def test_document_and_raw_streams_page_through_ties(db) -> None:
    _seed_ties(db)
    docs = list(ProcessingStore(db).stream_documents())
    assert len(docs) == 39
    keys = [(d.channel_id, d.message_date, d.source_ref) for d in docs]
    assert keys == sorted(keys)
    messages = list(RawStore(db).stream_channel(7))
    assert len(messages) == 13
    assert [(m.date, m.source_ref) for m in messages] == sorted((m.date, m.source_ref) for m in messages)


def test_keyset_paging_that_makes_no_progress_stops(db) -> None:
    _seed_ties(db)
    batches = db.keyset_batches(
        "raw_stream_channel",
        {"channel_id": 7},
        start={"after_date": T0 - timedelta(days=1), "after_ref": ""},
        after=lambda row: {"after_date": T0 - timedelta(days=1), "after_ref": ""},  # a key that never moves
        batch_size=2,
    )
    assert len(next(batches)) == 2
    with pytest.raises(RuntimeError, match="no progress"):
        next(batches)


# --- watching pg_stat_activity --------------------------------------------------------------------------


class Watcher:
    """Samples the tool's backends (by application_name) from its own connection."""

    def __init__(self, dbname: str, application_name: str) -> None:
        self.conn = psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, autocommit=True)
        self.application_name = application_name
        self.samples: list[list[dict[str, Any]]] = []

    def sample(self) -> list[dict[str, Any]]:
        """The tool's backends that are inside a transaction right now (or have an open cursor)."""
        rows = self.conn.execute(
            "SELECT a.pid, a.state, a.xact_start, a.query FROM pg_stat_activity AS a"
            " WHERE a.datname = current_database() AND a.application_name = %s AND a.pid <> pg_backend_pid()",
            (self.application_name,),
        ).fetchall()
        self.samples.append([{"pid": r[0], "state": r[1], "xact_start": r[2], "query": r[3]} for r in rows])
        return [
            {"pid": r[0], "state": r[1], "xact_start": r[2], "query": r[3]}
            for r in rows
            if r[2] is not None or (r[1] or "").startswith("idle in transaction")
        ]

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def watched(pg_dbname: str) -> Any:
    name = f"tgp-watch-{uuid.uuid4().hex[:8]}"
    settings = pg_settings(pg_dbname, db_application_name=name)
    watcher = Watcher(pg_dbname, name)
    try:
        yield settings, watcher
    finally:
        watcher.close()


def test_no_transaction_is_open_while_an_llm_request_is_in_flight(watched) -> None:
    settings, watcher = watched
    db = open_database(settings)
    in_flight: list[list[dict[str, Any]]] = []

    def watching(handler):
        def answer(request: LlmRequest) -> dict:
            in_flight.append(watcher.sample())  # the tool is waiting for this very request
            return handler(request)

        return answer

    try:
        seed(db, count=90)
        with LlmServer(latency=0.05) as server:  # a slow server
            server.handlers["topics"] = watching(topics_handler)
            server.handlers["supporting_items"] = watching(supporting_handler)
            llm = settings.model_copy(
                update={"openai_base_url": server.base_url, "llm_model": "gpt-5-mini", "llm_max_retries": 0}
            )
            strategy = LlmTopicStrategy(LlmClient.from_settings(llm), batch_tokens=500)
            report = topicize(db, strategy, TopicGates(), run_id="watched")
    finally:
        db.close()
    assert report.ok and report.channels[0].topics > 0
    assert len(in_flight) >= 3, "several LLM requests were watched"
    assert any(watcher.samples), "the tool's backends were visible to the watcher"
    assert in_flight == [[]] * len(in_flight), [s for s in in_flight if s]


class SlowSink:
    """A file-like sink that is slow: each write first looks at the tool's backends (a round trip)."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.open_transactions: list[dict[str, Any]] = []
        self.writes = 0
        self.size = 0

    def write(self, data: bytes) -> int:
        self.writes += 1
        if self.writes % 50 == 1:
            self.open_transactions += self.watcher.sample()
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def test_no_transaction_is_open_while_the_export_writer_is_slow(watched) -> None:
    settings, watcher = watched
    db = open_database(settings)
    try:
        seed_documents(db, 4500)  # three keyset batches of the export
        sink = SlowSink(watcher)
        entries, _ = write_kb_entries(db, sink)  # type: ignore[arg-type]
    finally:
        db.close()
    assert entries == 4500 and sink.writes >= 4500
    assert len(watcher.samples) >= 90 and any(watcher.samples)
    assert sink.open_transactions == []


@pytest.mark.slow
def test_no_transaction_is_open_while_a_client_reads_kb_ndjson_slowly(watched) -> None:
    settings, watcher = watched
    db = open_database(settings)
    try:
        seed_documents(db, 3000)
        token = new_key(db, "reader")
    finally:
        db.close()
    seen: list[dict[str, Any]] = []
    with ThreadedApi(settings) as api:
        client = socket.create_connection(("127.0.0.1", api.port), timeout=10)
        client.sendall(
            b"GET /api/v1/export/kb.ndjson HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
            + f"Authorization: Bearer {token}\r\n\r\n".encode()
        )
        received = bytearray(client.recv(4096))
        assert received.startswith(b"HTTP/1.1 200")
        # The export's reads are done while the client has hardly begun: nothing waits for it.
        wait_for(
            lambda: not [t for t in threading.enumerate() if t.name == "export-stream"],
            20,
            what="the export to be spooled",
        )
        while chunk := client.recv(16384):  # slowly: one look at the backends per read
            received += chunk
            seen += watcher.sample()
        client.close()
    assert received.count(b"\n") > 3000 and len(watcher.samples) > 50
    assert seen == []


# --- timeouts --------------------------------------------------------------------------------------------


SLEEP_SQL = """
-- name: probe_sleep
-- Sleep on the server. Served by: nothing.
SELECT pg_sleep(:seconds) AS slept;

-- name: probe_lock_row
-- Lock the one probe row. Served by: nothing.
SELECT id FROM public.tgp_probe_locked WHERE id = 1 FOR UPDATE;

-- name: probe_setting
-- A setting as this session sees it. Served by: nothing.
SELECT current_setting(:name) AS value;

-- name: probe_prepared
-- Prepared statements of this session. Served by: nothing.
SELECT count(*) AS n FROM pg_prepared_statements;
"""


@pytest.fixture
def probe_settings(pg_dbname: str) -> Settings:
    return pg_settings(pg_dbname)


@pytest.fixture
def probe_sql(tmp_path) -> Any:
    root = tmp_path / "probe-sql"
    (root / "raw" / "postgres").mkdir(parents=True)
    (root / "raw" / "postgres" / "probe.sql").write_text(SLEEP_SQL, encoding="utf-8")
    return root


def _probe_db(settings: Settings, probe_sql: Any, **update: Any) -> Any:
    """The configured database (open_database: the settings' path), with the probe queries' catalog."""
    db = open_database(settings.model_copy(update=update))
    db.catalog = SqlCatalog.load("postgres", root=probe_sql)
    return db


def test_a_statement_timeout_is_one_line_naming_the_setting(probe_settings, probe_sql) -> None:
    from tg_parser.errors import DatabaseTimeout

    db = _probe_db(probe_settings, probe_sql, db_statement_timeout=50)
    try:
        with pytest.raises(DatabaseTimeout) as caught:
            db.fetch_one("probe_sleep", {"seconds": 5})
        assert "DB_STATEMENT_TIMEOUT (50 ms)" in caught.value.one_line()
        assert "\n" not in caught.value.one_line()
        # Work that legitimately runs long lifts the limit for its own transactions only.
        with db.long_statements():
            assert db.fetch_one("probe_sleep", {"seconds": 0.2}) is not None
            with db.transaction():
                db.fetch_one("probe_sleep", {"seconds": 0.2})
        with pytest.raises(DatabaseTimeout):
            db.fetch_one("probe_sleep", {"seconds": 5})
    finally:
        db.close()


def test_a_lock_timeout_is_one_line_naming_the_setting(probe_settings, probe_sql, pg_dbname) -> None:
    from tg_parser.errors import DatabaseTimeout

    with psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=pg_dbname, autocommit=True
    ) as holder:
        holder.execute("CREATE TABLE IF NOT EXISTS public.tgp_probe_locked (id int PRIMARY KEY)")
        holder.execute("INSERT INTO public.tgp_probe_locked VALUES (1) ON CONFLICT DO NOTHING")
        db = _probe_db(probe_settings, probe_sql, db_lock_timeout=100)
        try:
            with holder.transaction():
                holder.execute("SELECT id FROM public.tgp_probe_locked WHERE id = 1 FOR UPDATE")
                with pytest.raises(DatabaseTimeout) as caught:
                    db.fetch_one("probe_lock_row")
            assert "DB_LOCK_TIMEOUT (100 ms)" in caught.value.one_line()
            assert db.fetch_one("probe_lock_row") == {"id": 1}  # released: no wait now
        finally:
            db.close()
            holder.execute("DROP TABLE public.tgp_probe_locked")


def test_an_idle_transaction_is_ended_with_one_line_naming_the_setting(
    probe_settings, probe_sql, pg_dbname
) -> None:
    from tg_parser.errors import DatabaseTimeout

    name = f"tgp-idle-{uuid.uuid4().hex[:8]}"
    db = _probe_db(probe_settings, probe_sql, db_idle_in_transaction_timeout=100, db_application_name=name)
    watcher = Watcher(pg_dbname, name)
    try:
        with pytest.raises(DatabaseTimeout) as caught, db.transaction():
            db.fetch_one("probe_setting", {"name": "idle_in_transaction_session_timeout"})
            # The server ends the idle session by itself; wait for that (with a deadline), then go on.
            wait_for(lambda: not watcher.sample(), 10, what="the server to end the idle transaction")
            db.fetch_one("probe_setting", {"name": "statement_timeout"})
        assert "DB_IDLE_IN_TRANSACTION_TIMEOUT (100 ms)" in caught.value.one_line()
        assert db.fetch_one("probe_setting", {"name": "lock_timeout"}) is not None  # the pool recovers
    finally:
        watcher.close()
        db.close()


def test_session_mode_sets_the_timeouts_as_startup_options(probe_settings, probe_sql) -> None:
    db = _probe_db(
        probe_settings,
        probe_sql,
        db_statement_timeout=1234,
        db_lock_timeout=567,
        db_idle_in_transaction_timeout=8910,
    )
    try:
        assert db.fetch_one("probe_setting", {"name": "statement_timeout"}) == {"value": "1234ms"}
        assert db.fetch_one("probe_setting", {"name": "lock_timeout"}) == {"value": "567ms"}
        assert db.fetch_one("probe_setting", {"name": "idle_in_transaction_session_timeout"}) == {
            "value": "8910ms"
        }
    finally:
        db.close()


# --- DB_POOL_MODE=transaction (PgBouncer transaction pooling) ------------------------------------------


def test_transaction_mode_keeps_no_session_state(probe_settings, probe_sql) -> None:
    one_connection = {"db_pool_min_size": 1, "db_pool_max_size": 1}
    session = _probe_db(probe_settings, probe_sql, **one_connection)
    try:  # the contrast: session mode prepares a statement run often, and sets timeouts at startup
        for _ in range(8):
            session.fetch_one("probe_setting", {"name": "statement_timeout"})
        assert session.fetch_scalar("probe_prepared") > 0
    finally:
        session.close()
    db = _probe_db(
        probe_settings,
        probe_sql,
        db_pool_mode="transaction",
        db_statement_timeout=4321,
        db_lock_timeout=321,
        db_idle_in_transaction_timeout=54321,
        **one_connection,
    )
    try:
        assert "options" not in db._kwargs  # nothing PgBouncer would refuse at startup
        for _ in range(8):
            db.fetch_one("probe_setting", {"name": "statement_timeout"})
        assert db.fetch_scalar("probe_prepared") == 0
        # No session carries the timeouts: each explicit transaction sets them for itself (SET LOCAL).
        assert db.fetch_scalar("probe_setting", {"name": "statement_timeout"}) == "0"
        with db.transaction():
            assert db.fetch_scalar("probe_setting", {"name": "statement_timeout"}) == "4321ms"
            assert db.fetch_scalar("probe_setting", {"name": "lock_timeout"}) == "321ms"
            assert (
                db.fetch_scalar("probe_setting", {"name": "idle_in_transaction_session_timeout"}) == "54321ms"
            )
        assert db.fetch_scalar("probe_setting", {"name": "lock_timeout"}) == "0"
        with db.long_statements(), db.transaction():
            assert db.fetch_scalar("probe_setting", {"name": "statement_timeout"}) == "0"
    finally:
        db.close()


@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_an_exhausted_pool_is_one_line_naming_the_pool_settings(probe_settings, probe_sql, pool_mode) -> None:
    """More concurrent work than DB_POOL_MAX_SIZE connections: a caller that gets none within
    DB_POOL_TIMEOUT fails with one line naming both settings (not "cannot connect": the server is fine),
    and the pool serves again once a connection is handed back."""
    from tg_parser.errors import DatabaseUnavailable

    db = _probe_db(
        probe_settings,
        probe_sql,
        db_pool_mode=pool_mode,
        db_pool_min_size=1,
        db_pool_max_size=1,
        db_pool_timeout=0.2,
    )
    try:
        with db.connection(), pytest.raises(DatabaseUnavailable) as caught:  # the one connection is lent
            db.fetch_one("probe_setting", {"name": "lock_timeout"})
        line = caught.value.one_line()
        assert "within 0.2 s (DB_POOL_TIMEOUT)" in line and "DB_POOL_MAX_SIZE (1)" in line, line
        assert "cannot connect" not in line and "\n" not in line
        assert caught.value.exit_code == 3
        assert db.fetch_one("probe_setting", {"name": "lock_timeout"}) is not None  # handed back: served
    finally:
        db.close()


HOLDER = """
import sys
from tg_parser.config import load_settings
from tg_parser.db.connect import open_database
db = open_database(load_settings(_env_file=None))
with db.hold_lock("ingest:shared"):
    print("held", flush=True)
    sys.stdin.readline()
db.close()
print("released", flush=True)
"""


def _env_of(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "DB_TYPE": "postgres",
        "DB_HOST": settings.db_host,
        "DB_PORT": str(settings.db_port),
        "DB_USER": settings.db_user,
        "DB_NAME": settings.db_name,
        "DB_POOL_MODE": "transaction",
    }


def test_transaction_mode_locks_exclude_each_other_across_processes(probe_settings, pg_dbname) -> None:
    import subprocess
    import sys

    from tg_parser.db.locks import LockBusy

    settings = probe_settings.model_copy(update={"db_pool_mode": "transaction"})
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER],
        env=_env_of(settings),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    watcher = Watcher(pg_dbname, settings.db_application_name)
    db = open_database(settings)
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(LockBusy) as busy, db.hold_lock("ingest:shared"):
            pass
        assert busy.value.holder and f"pid {child.pid} on {socket.gethostname()}" in busy.value.holder
        # Held with no session state: no advisory lock, no transaction left open by the holder. Only this
        # database's locks count: other test processes (and sessions) share the server.
        locks = watcher.conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()
        assert locks == (0,)
        assert watcher.sample() == []
        with db.hold_lock("ingest:other"):  # another name is free
            pass
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "released"
        assert child.wait(timeout=30) == 0
        # And in one process, a second holder is refused too.
        with db.hold_lock("ingest:shared"), pytest.raises(LockBusy), db.hold_lock("ingest:shared"):
            pass
        assert db.fetch_one("lock_table_holder", {"name": "ingest:shared"}) is None  # released
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
        watcher.close()
        db.close()


def test_transaction_mode_takes_over_an_expired_lock_and_renews_its_own(probe_settings, pg_dbname) -> None:
    settings = probe_settings.model_copy(update={"db_pool_mode": "transaction"})
    watcher = Watcher(pg_dbname, settings.db_application_name)
    db = open_database(settings)
    try:
        watcher.conn.execute(
            "INSERT INTO ingestion.named_locks VALUES ('ingest:crashed', 'gone', 'old-host', 1,"
            " now() - interval '10 minutes', now() - interval '9 minutes')"
        )
        db.lock_ttl = 0.3  # type: ignore[attr-defined]
        with db.hold_lock("ingest:crashed"):
            row = watcher.conn.execute(
                "SELECT host, pid, expires_at FROM ingestion.named_locks WHERE name = 'ingest:crashed'"
            ).fetchone()
            assert row is not None and row[:2] == (socket.gethostname(), os.getpid())
            first_expiry = row[2]
            # The heartbeat pushes the expiry forward while the block runs.
            wait_for(
                lambda: watcher.conn.execute(
                    "SELECT expires_at > %s FROM ingestion.named_locks WHERE name = 'ingest:crashed'",
                    (first_expiry,),
                ).fetchone()[0],
                10,
                what="the lock to be renewed",
            )
        assert watcher.conn.execute("SELECT count(*) FROM ingestion.named_locks").fetchone() == (0,)
    finally:
        watcher.close()
        db.close()


def test_transaction_mode_refuses_a_server_session_that_is_not_utc(probe_settings, pg_dbname) -> None:
    from tg_parser.errors import ConfigError

    role = f"tgp_tz_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=pg_dbname, autocommit=True
    ) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN SUPERUSER")
        admin.execute(f"ALTER ROLE {role} SET TimeZone = 'Europe/Berlin'")
        try:
            settings = probe_settings.model_copy(update={"db_pool_mode": "transaction", "db_user": role})
            with pytest.raises(ConfigError) as caught:
                open_database(settings)
            assert f"ALTER ROLE {role} SET TimeZone = 'UTC'" in caught.value.one_line()
            # Session mode sets TimeZone itself at startup.
            open_database(settings.model_copy(update={"db_pool_mode": "session"})).close()
        finally:
            admin.execute(f"DROP ROLE {role}")
