"""`tg-parser serve` as the operator runs it: a real uvicorn process on a loopback port, every endpoint
called with urllib, a clean stop on SIGTERM; with `--workers 2` on PostgreSQL a key's rate limit holds
across both processes."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from support.api_server import (
    EXAMPLE_CHANNEL,
    EXAMPLE_SOURCE,
    ServeProcess,
    new_key,
    scoped_keys,
    seed_example,
    wait_for,
)
from support.cli import db_env

from tg_parser.db.connect import open_database


def call(port: int, method: str, path: str, token: str | None = None, body: object = None):
    """(status, headers, body bytes) of one request made with urllib."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=20) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


@pytest.mark.slow
def test_serve_answers_every_endpoint_and_stops_on_sigterm(settings, tmp_path):
    seed_example(settings, tmp_path / "seed-out")
    keys = scoped_keys(settings)
    env = {**db_env(settings), "LOG_LEVEL": "INFO", "WORKER_POLL_SECONDS": "0.2"}
    with ServeProcess(env, "serve", log=tmp_path / "serve.log", cwd=tmp_path) as server:
        server.wait_healthy()
        port = server.port
        read, write, admin = keys["read"], keys["write"], keys["admin"]

        def ok(method: str, path: str, token: str | None = read, body: object = None, status: int = 200):
            got, headers, data = call(port, method, path, token, body)
            assert got == status, (method, path, got, data[:300])
            assert headers.get("x-request-id")
            return data

        assert json.loads(ok("GET", "/health"))["status"] == "ok"
        assert json.loads(ok("GET", "/ready"))["ready"] is True
        assert json.loads(ok("GET", "/api/v1/sources"))["items"][0]["source_id"] == EXAMPLE_SOURCE
        messages = json.loads(ok("GET", f"/api/v1/messages?channel={EXAMPLE_CHANNEL}&limit=5"))
        assert len(messages["items"]) == 5 and messages["next"]
        ok("GET", f"/api/v1/messages?cursor={messages['next']}")
        documents = json.loads(ok("GET", "/api/v1/documents?since=2024-01-01"))["items"]
        assert documents
        topics = json.loads(ok("GET", "/api/v1/topics"))["items"]
        assert len(topics) == 2
        topic = json.loads(ok("GET", f"/api/v1/topics/{topics[0]['topic_id']}"))
        assert topic["topic"]["topic_id"] == topics[0]["topic_id"]
        export = ok("GET", "/api/v1/export/kb.ndjson")
        assert export == (tmp_path / "seed-out" / "kb_entries.ndjson").read_bytes()
        ok("POST", "/api/v1/sources", write, {"channel": "@durov"}, status=201)
        ok("POST", "/api/v1/sources/durov/pause", write)
        ok("POST", "/api/v1/sources/durov/resume", write)
        ok("DELETE", "/api/v1/sources/durov", write)
        ok("DELETE", "/api/v1/sources/durov", write, status=404)
        run = json.loads(ok("POST", "/api/v1/runs", write, {"steps": ["export"]}, status=202))["run"]
        ok("GET", "/api/v1/runs")
        ok("GET", f"/api/v1/runs/{run['run_id']}")
        if settings.db_type == "sqlite":
            # With SQLite the API process executes runs itself (serve --execute-runs is the default).
            wait_for(
                lambda: (
                    json.loads(ok("GET", f"/api/v1/runs/{run['run_id']}"))["run"]["status"] == "succeeded"
                ),
                30,
                interval=0.1,
                what="the run to succeed",
            )
            assert (tmp_path / "out" / "kb_entries.ndjson").exists()
        else:
            # With PostgreSQL `tg-parser worker` does it: the run waits in the queue.
            assert json.loads(ok("GET", f"/api/v1/runs/{run['run_id']}"))["run"]["status"] == "queued"
        created = json.loads(ok("POST", "/api/v1/keys", admin, {"name": "smoke"}, status=201))
        ok("GET", "/api/v1/sources", created["token"])
        ok("GET", "/api/v1/keys", admin)
        ok("DELETE", "/api/v1/keys/smoke", admin)
        ok("GET", "/api/v1/keys", read, status=403)
        ok("GET", "/api/v1/sources", None, status=401)
        metrics = ok("GET", "/metrics").decode()
        assert 'tg_parser_http_requests_total{method="GET",route="/api/v1/sources",status="200"}' in metrics
        assert "tg_parser_documents " in metrics and "tg_parser_database_up 1.0" in metrics
        docs = json.loads(ok("GET", "/openapi.json"))
        assert "/api/v1/export/kb.ndjson" in docs["paths"]
        started = time.monotonic()
        # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught; serve turns that into exit 0.
        assert server.terminate(timeout=20) == 0, server.output()
        assert time.monotonic() - started < 20
    output = server.output()
    assert "Application shutdown complete" in output, output
    assert "Traceback" not in output and " ERROR " not in output, output


@pytest.mark.slow
def test_rate_limit_holds_across_two_worker_processes(pg_only_settings, tmp_path):
    settings = pg_only_settings
    db = open_database(settings)
    try:
        token = new_key(db, "reader")
    finally:
        db.close()
    limit, sent = 12, 30
    prometheus = tmp_path / "prometheus"
    prometheus.mkdir()
    env = {
        **db_env(settings),
        "LOG_LEVEL": "WARNING",
        "API_RATE_LIMIT_READ": str(limit),
        "API_RATE_WINDOW": "3600",
        "PROMETHEUS_MULTIPROC_DIR": str(prometheus),
    }
    with ServeProcess(env, "serve", "--workers", "2", log=tmp_path / "serve.log", cwd=tmp_path) as server:
        server.wait_healthy()

        def both_workers_serve() -> bool:
            # Probes from loopback are not rate limited; each process writes its counters to its own file.
            with ThreadPoolExecutor(max_workers=4) as pool:
                list(pool.map(lambda _: call(server.port, "GET", "/health"), range(8)))
            return len({p.name for p in prometheus.glob("counter_*.db")}) == 2

        wait_for(both_workers_serve, 60, interval=0.05, what="both API processes to answer")
        window = int(time.time() // 3600)
        with ThreadPoolExecutor(max_workers=10) as pool:
            answers = list(
                pool.map(lambda _: call(server.port, "GET", "/api/v1/sources", token), range(sent))
            )
        if int(time.time() // 3600) != window:
            pytest.skip("the requests straddled an hourly rate window")
        statuses = Counter(status for status, _, _ in answers)
        assert statuses == {200: limit, 429: sent - limit}, statuses
        refused = next(headers for status, headers, _ in answers if status == 429)
        assert 0 < int(refused["retry-after"]) <= 3600
        # /metrics adds up the counters of both processes.
        metrics = call(server.port, "GET", "/metrics")[2].decode()
        assert server.terminate(timeout=30) == 0, server.output()
    assert f'route="/api/v1/sources",status="200"}} {float(limit)}' in metrics
    assert f'route="/api/v1/sources",status="429"}} {float(sent - limit)}' in metrics


@pytest.mark.slow
def test_serve_with_two_workers_removes_its_metrics_directory_on_exit(pg_only_settings, tmp_path):
    """Without PROMETHEUS_MULTIPROC_DIR, `serve --workers 2` makes a directory for the shared counters;
    it is gone after a stop, so restarts do not pile up directories (or old counters)."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**db_env(pg_only_settings), "LOG_LEVEL": "WARNING", "TMPDIR": str(scratch)}
    with ServeProcess(env, "serve", "--workers", "2", log=tmp_path / "serve.log", cwd=tmp_path) as server:
        server.wait_healthy()
        assert call(server.port, "GET", "/health")[0] == 200
        made = list(scratch.glob("tg-parser-metrics-*"))
        assert len(made) == 1, made
        assert server.terminate(timeout=30) == 0, server.output()
    assert not made[0].exists()
