"""Probes while PostgreSQL comes and goes (through a TCP proxy the test cuts and restores), internal
errors that answer 500 with a request id and nothing else, and the request id on every log line."""

from __future__ import annotations

import io
import json
import logging
import sys
import time
from collections.abc import Iterator

import pytest
from conftest import PG_HOST, PG_PORT
from loguru import logger
from support.api_server import TcpProxy, ThreadedApi, new_key, wait_for

from tg_parser.db.connect import open_database
from tg_parser.logging import setup_logging
from tg_parser.stores.browse import BrowseStore


def _timed(call):
    started = time.monotonic()
    answer = call()
    return answer, time.monotonic() - started


@pytest.fixture
def proxied(pg_only_settings) -> Iterator[tuple[TcpProxy, object]]:
    proxy = TcpProxy((PG_HOST, PG_PORT)).start()
    settings = pg_only_settings.model_copy(
        update={"db_port": proxy.port, "db_pool_timeout": 4.0, "db_connect_timeout": 2}
    )
    try:
        yield proxy, settings
    finally:
        proxy.stop()


@pytest.mark.slow
def test_ready_follows_postgres_down_and_up(proxied):
    proxy, settings = proxied
    # A pool timeout far beyond the probes' 2 s ping: a probe that waited for the pool instead of the ping
    # would take a minute, which no loaded machine turns the 2 s into.
    pool_timeout = 60.0
    settings = settings.model_copy(update={"db_pool_timeout": pool_timeout})
    with ThreadedApi(settings) as api:
        client = api.client()
        assert client.get("/ready").status == 200
        proxy.stop()
        ready, took = _timed(lambda: client.get("/ready"))
        assert ready.status == 503, ready
        assert took < pool_timeout / 2, took  # the 2 s ping, not the pool's timeout
        assert ready.json()["ready"] is False
        health, took = _timed(lambda: client.get("/health"))
        assert health.status == 200 and took < 1.0
        metrics, took = _timed(lambda: client.get("/metrics"))
        assert metrics.status == 200 and took < pool_timeout / 2, (metrics, took)
        text = metrics.body.decode()
        assert "tg_parser_database_up 0.0" in text
        assert 'tg_parser_http_requests_total{method="GET",route="/ready",status="503"}' in text
        proxy.start()
        wait_for(lambda: client.get("/ready").status == 200, 20, interval=0.2, what="/ready 200")
        assert "tg_parser_database_up 1.0" in client.get("/metrics").body.decode()


def test_api_starts_while_postgres_is_down(proxied):
    proxy, settings = proxied
    db = open_database(settings)
    try:
        token = new_key(db, "reader")
    finally:
        db.close()
    proxy.stop()
    with ThreadedApi(settings) as api:
        client = api.client(token)
        health, took = _timed(lambda: client.get("/health"))
        assert health.status == 200 and took < 1.0, health
        ready = client.get("/ready")
        assert ready.status == 503 and ready.json()["ready"] is False, ready
        assert "tg_parser_database_up 0.0" in client.get("/metrics").body.decode()
        sources = client.get("/api/v1/sources")
        assert sources.status == 503, sources
        assert sources.json()["error"]["code"] == "unavailable"
        proxy.start()
        wait_for(lambda: client.get("/ready").status == 200, 20, interval=0.2, what="/ready 200")
        assert client.get("/api/v1/sources").status == 200


@pytest.mark.slow
def test_data_routes_answer_503_while_postgres_is_down(proxied):
    """A data route that meets the outage (a pooled connection that broke under a statement, or a pool
    that cannot lend one in time) answers 503 `unavailable`, not a 500; and 200 once the server is back."""
    proxy, settings = proxied
    db = open_database(settings)
    try:
        token = new_key(db, "reader")
    finally:
        db.close()
    with ThreadedApi(settings) as api:
        client = api.client(token)
        assert client.get("/api/v1/documents?limit=5").status == 200
        proxy.stop()
        for path in (
            "/api/v1/documents?limit=5",
            "/api/v1/messages?limit=5",
            "/api/v1/topics",
            "/api/v1/runs",
        ):
            answer = client.get(path)
            assert answer.status == 503, (path, answer)
            error = answer.json()["error"]
            assert error["code"] == "unavailable", error
            assert "Traceback" not in error["message"] and "cannot connect" in error["message"], error
        proxy.start()
        wait_for(
            lambda: client.get("/api/v1/documents?limit=5").status == 200,
            20,
            interval=0.2,
            what="documents 200",
        )


# --- internal errors and the request id -----------------------------------------------------------


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """JSON log lines of this process into a buffer; the logging set-up other tests expect is restored."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    buffer = io.StringIO()
    setup_logging("DEBUG", "json", sink=buffer)
    try:
        yield buffer
    finally:
        logger.remove()
        logger.configure(extra={}, patcher=None)
        logger.add(sys.stderr)
        root.handlers[:], root.level = saved


def _lines(buffer: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def test_an_unexpected_error_is_a_500_with_a_request_id_and_nothing_else(settings, monkeypatch, json_log):
    db = open_database(settings)
    try:
        token = new_key(db, "reader")
    finally:
        db.close()
    dsn = "postgresql://tgp:hunter2-secret@db.internal:5432/tgp"

    def explode(self, *args, **kwargs):
        logger.info("about to fail inside the route")
        raise RuntimeError(f"boom: could not use {dsn} with key {token}")

    monkeypatch.setattr(BrowseStore, "messages_page", explode)
    with ThreadedApi(settings) as api:
        client = api.client(token)
        answer = client.get("/api/v1/messages", headers={"X-Request-ID": "req-err-1"})
        fine = client.get("/api/v1/sources", headers={"X-Request-ID": "req-fine-2"})
        generated = client.get("/api/v1/messages")
    assert answer.status == 500, answer
    body = answer.json()
    assert body == {
        "error": {"code": "internal", "message": "internal error; request id req-err-1"},
        "request_id": "req-err-1",
    }
    assert answer.headers["x-request-id"] == "req-err-1"
    for leak in (b"Traceback", b"hunter2", b"postgresql://", token.encode(), b"RuntimeError", b"boom"):
        assert leak not in answer.body
    assert fine.status == 200 and fine.headers["x-request-id"] == "req-fine-2"
    assert generated.status == 500
    assert len(generated.json()["request_id"]) == 32

    lines = _lines(json_log)
    mine = [line for line in lines if (line.get("extra") or {}).get("request_id") == "req-err-1"]
    messages = [line["message"] for line in mine]
    assert "about to fail inside the route" in messages  # a line logged by the route's own code
    assert "request failed: RuntimeError" in messages
    assert any(m.startswith("GET /api/v1/messages -> 500") for m in messages)
    failed = next(line for line in mine if line["message"] == "request failed: RuntimeError")
    assert "RuntimeError" in failed["exception"]
    assert "hunter2" not in json_log.getvalue()  # the DSN password is redacted from the log too
    fine_lines = [line for line in lines if (line.get("extra") or {}).get("request_id") == "req-fine-2"]
    access = [line for line in fine_lines if line["message"].startswith("GET /api/v1/sources -> 200")]
    assert len(access) == 1 and access[0]["extra"]["key"] == "reader"
    assert not any("req-err-1" in m for m in (line["message"] for line in fine_lines))


def test_an_export_cut_by_a_database_error_logs_one_line_and_no_traceback(settings, monkeypatch, json_log):
    """The streamed export fails after its first bytes went out (a pool timeout, a lost server): the stream
    is cut, which is all the client can be told, and the log says why in one line, without a traceback."""
    from http.client import IncompleteRead

    from support.process_data import seed_documents

    from tg_parser.errors import DatabaseUnavailable
    from tg_parser.stores.export import ExportStore

    db = open_database(settings)
    try:
        token = new_key(db, "reader")
        seed_documents(db, 200)  # ~250 KB of entries: the first chunks go out before the failure
    finally:
        db.close()
    original = ExportStore.document_batches

    def first_batch_then_fail(self, *args, **kwargs):
        yield next(original(self, *args, **kwargs))
        raise DatabaseUnavailable("no connection came free within 0.5 s (DB_POOL_TIMEOUT)", "raise it")

    monkeypatch.setattr(ExportStore, "document_batches", first_batch_then_fail)
    with ThreadedApi(settings) as api:
        client = api.client(token)
        with pytest.raises(IncompleteRead):
            client.get("/api/v1/export/kb.ndjson", headers={"X-Request-ID": "req-cut-1"})
        assert client.get("/api/v1/sources").status == 200
    mine = [line for line in _lines(json_log) if (line.get("extra") or {}).get("request_id") == "req-cut-1"]
    failed = [line for line in mine if line["level"] == "ERROR"]
    assert [line["message"] for line in failed] == [
        "request failed after its answer started: no connection came free within 0.5 s (DB_POOL_TIMEOUT)"
        " — raise it"
    ], mine
    assert not failed[0].get("exception"), failed[0]


def test_the_api_run_worker_survives_a_database_outage(proxied, tmp_path, monkeypatch):
    """`serve --execute-runs`: the worker thread in the API process outlives PostgreSQL going away."""
    proxy, settings = proxied
    monkeypatch.chdir(tmp_path)
    settings = settings.model_copy(update={"worker_poll_seconds": 0.05, "db_pool_timeout": 1.0})
    db = open_database(settings)
    try:
        token = new_key(db, "writer", "write")
    finally:
        db.close()
    with ThreadedApi(settings, execute_runs=True) as api:
        client = api.client(token)
        runner = api.state.worker
        wait_for(lambda: runner.queue is not None, 10, what="the run worker to start")
        worker = runner.queue
        looks, failures = [], []
        drain = worker.drain

        def watched_drain() -> int:
            looks.append(time.monotonic())
            try:
                return drain()
            except Exception as exc:
                failures.append((len(looks), exc))
                raise

        worker.drain = watched_drain
        proxy.stop()
        # The worker meets the outage (a look at the queue fails after the pool's timeout) and looks again.
        wait_for(
            lambda: failures and len(looks) > failures[0][0], 15, what="the worker to go on after a failure"
        )
        assert runner.thread.is_alive()
        proxy.start()
        wait_for(lambda: client.get("/ready").status == 200, 20, interval=0.2, what="/ready 200")
        assert runner.thread.is_alive(), "the run worker died with the database"
        created = client.post("/api/v1/runs", {"steps": ["export"]})
        assert created.status == 202
        location = created.headers["location"]
        run = wait_for(
            lambda: (r := client.get(location).json()["run"])["status"] in ("succeeded", "failed") and r,
            20,
            what="the run to finish",
        )
    assert run["status"] == "succeeded", run
