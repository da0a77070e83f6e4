"""The run queue on both dialects: two workers draining one queue execute each run exactly once; a
worker killed mid-run leaves its run 'running' until its lease lapses, then another worker fails it;
completion webhooks are signed over the exact body, retried after 5xx answers and recorded."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import Counter

import pytest
from pydantic import SecretStr
from support.api_server import (
    EXAMPLE,
    EXAMPLE_SOURCE,
    ServeProcess,
    ThreadedApi,
    WebhookReceiver,
    cli,
    new_key,
    seed_example,
    wait_for,
)
from support.llm_server import LlmServer, processed_document_content, structured
from support.process_data import cli_env

from tg_parser.backoff import Backoff
from tg_parser.db.connect import open_database
from tg_parser.pipeline import webhooks
from tg_parser.pipeline.queue import QueueWorker
from tg_parser.pipeline.run import Pipeline
from tg_parser.stores import ProcessingStore
from tg_parser.stores.run_queue import RunQueueStore

FAST = Backoff(base=0.01, cap=0.05)
SECRET = "whsec-test-0123456789"


def _enqueue(db, run_id: str, steps: list[str], **kwargs) -> None:
    RunQueueStore(db).enqueue(
        run_id,
        steps,
        source_id=kwargs.get("source_id"),
        options=kwargs.get("options", {"processor": "extractive"}),
        requested_by="test",
        webhook_url=kwargs.get("webhook_url"),
    )


def test_two_workers_execute_each_run_exactly_once(settings, tmp_path, monkeypatch):
    seed_example(settings, tmp_path / "seed-out")
    runs = [f"run-{i}" for i in range(6)]
    db = open_database(settings)
    try:
        for run_id in runs:
            _enqueue(db, run_id, ["process", "export"], source_id=EXAMPLE_SOURCE)
    finally:
        db.close()

    calls: list[tuple[str, str]] = []
    lock = threading.Lock()
    entered: set[str] = set()
    both_busy = threading.Event()
    original = Pipeline.export

    def export(self):
        # The first run of each worker waits (at most 10 s) until the other worker is busy too, so the
        # two really drain the queue side by side.
        with lock:
            calls.append((self.run_id, threading.current_thread().name))
            entered.add(threading.current_thread().name)
            if len(entered) == 2:
                both_busy.set()
        both_busy.wait(10)
        return original(self)

    monkeypatch.setattr(Pipeline, "export", export)
    executed: dict[str, int] = {}
    databases = [open_database(settings) for _ in range(2)]
    workers = [
        QueueWorker(database, settings, out_dir=tmp_path / f"out-{n}", worker_id=f"worker-{n}")
        for n, database in enumerate(databases)
    ]

    def drain(worker: QueueWorker) -> None:
        executed[worker.worker_id] = worker.drain()

    threads = [threading.Thread(target=drain, args=(w,), name=w.worker_id) for w in workers]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in threads), "a worker did not finish"
        rows = {run_id: RunQueueStore(databases[0]).get(run_id) for run_id in runs}
        reports = [
            r for r in ProcessingStore(databases[0]).recent_runs(limit=100) if r.run_id.startswith("run-")
        ]
        processing_runs = {r.run_id for r in reports if r.kind == "process"}
        pipeline_runs = {r.run_id: r for r in reports if r.kind == "run"}
    finally:
        for database in databases:
            database.close()
    assert sorted(executed.values()) != [0, 6] and sum(executed.values()) == 6, executed
    assert Counter(run_id for run_id, _ in calls) == Counter(runs)  # each run's export ran once
    by_worker = Counter(thread for _, thread in calls)
    assert set(by_worker) == {"worker-0", "worker-1"}
    for row in rows.values():
        assert row["status"] == "succeeded", row
        assert row["error"] is None
        assert row["worker_id"] in ("worker-0", "worker-1")
        assert row["lease_expires_at"] is None
        assert row["started_at"] <= row["finished_at"]
        assert [s["step"] for s in row["progress"]["steps_done"]] == ["process", "export"]
        assert row["counts"] == {
            "sources": 1,
            "steps_ok": 2,
            "steps_failed": 0,
            "documents": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "estimated_cost_usd": 0.0,
        }
        assert by_worker[row["worker_id"]] >= 1
    # The processing step of every run left exactly one processing run of its own, and every run one
    # run report naming it among its steps, started by the worker on behalf of the key that queued it.
    assert processing_runs == {f"{run_id}-process-{EXAMPLE_SOURCE}" for run_id in runs}
    assert set(pipeline_runs) == set(runs)
    for run_id, report in pipeline_runs.items():
        assert report.status == "ok"
        assert [s.get("run_id") for s in report.counts["steps"]] == [
            f"{run_id}-process-{EXAMPLE_SOURCE}",
            None,
        ]
        who = report.params["started_by"]
        assert (who["origin"], who["requested_by"], who["worker_id"]) == (
            "api",
            "test",
            rows[run_id]["worker_id"],
        )


def test_a_run_that_fails_is_recorded_and_the_worker_goes_on(settings, tmp_path):
    db = open_database(settings)
    try:
        # No such source any more: the run's preparation fails; the next run still executes.
        _enqueue(db, "run-a", ["process"], source_id="vanished")
        _enqueue(db, "run-b", ["export"])
        worker = QueueWorker(db, settings, out_dir=tmp_path / "out")
        assert worker.drain() == 2
        failed, ok = RunQueueStore(db).get("run-a"), RunQueueStore(db).get("run-b")
    finally:
        db.close()
    assert failed["status"] == "failed" and "vanished" in failed["error"]
    assert ok["status"] == "succeeded"


# --- webhooks ---------------------------------------------------------------------------------------


def _signature(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    ("script", "status", "attempts", "error"),
    [
        ([500, 503], "delivered", 3, None),
        ([500, 500, 500, 500], "failed", 4, "HTTP 500"),
        ([410], "failed", 1, "HTTP 410"),
        ([302], "failed", 1, "HTTP 302 (redirects are not followed: give the final URL)"),
    ],
)
def test_webhooks_are_signed_retried_and_recorded(settings, tmp_path, script, status, attempts, error):
    hooked = settings.model_copy(
        update={"webhook_secret": SecretStr(SECRET), "webhook_allow_private": True, "webhook_max_attempts": 4}
    )
    db = open_database(hooked)
    try:
        token = new_key(db, "writer", "write")
        with WebhookReceiver(script=list(script)) as receiver, ThreadedApi(hooked) as api:
            writer = api.client(token)
            created = writer.post("/api/v1/runs", {"steps": ["export"], "webhook_url": receiver.url})
            assert created.status == 202, created
            run_id = created.json()["run"]["run_id"]
            assert created.json()["run"]["webhook_status"] == "pending"
            worker = QueueWorker(db, hooked, out_dir=tmp_path / "out", webhook_backoff=FAST)
            assert worker.drain() == 1
            shown = writer.get(f"/api/v1/runs/{run_id}").json()["run"]
    finally:
        db.close()
    assert len(receiver.received) == attempts
    bodies = {r.body for r in receiver.received}
    assert len(bodies) == 1  # every attempt carries the same body
    for request in receiver.received:
        assert request.headers["x-tg-parser-signature"] == _signature(request.body)
        assert request.headers["x-tg-parser-event"] == "run.finished"
        assert request.headers["content-type"] == "application/json"
        assert request.path == "/hook"
    payload = json.loads(receiver.received[0].body)
    assert payload["event"] == "run.finished"
    assert payload["run_id"] == run_id
    assert payload["status"] == "succeeded"
    assert payload["steps"] == ["export"]
    assert payload["finished_at"] is not None
    assert shown["status"] == "succeeded"
    assert shown["webhook_status"] == status
    assert shown["webhook_attempts"] == attempts
    assert shown["webhook_error"] == error
    assert receiver.gets == []  # a redirect is not followed (as a GET that would count as delivered)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://api.localhost./hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.7:8080/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[fd00::1]/hook",
        "http://0.0.0.0/hook",
    ],
)
def test_a_webhook_to_a_private_address_is_refused_unless_allowed(settings, url):
    hooked = settings.model_copy(update={"webhook_secret": SecretStr(SECRET)})
    db = open_database(hooked)
    try:
        token = new_key(db, "writer", "write")
        before = RunQueueStore(db).count_by_status()
        with ThreadedApi(hooked) as api:
            refused = api.client(token).post("/api/v1/runs", {"steps": ["export"], "webhook_url": url})
        assert refused.status == 422, refused
        message = refused.json()["error"]["message"]
        assert message.startswith("webhook_url: refused") and "WEBHOOK_ALLOW_PRIVATE" in message, message
        assert RunQueueStore(db).count_by_status() == before  # nothing queued
        allowed = hooked.model_copy(update={"webhook_allow_private": True})
        with ThreadedApi(allowed) as api:
            accepted = api.client(token).post("/api/v1/runs", {"steps": ["export"], "webhook_url": url})
        assert accepted.status == 202, accepted
    finally:
        db.close()


def test_a_webhook_name_resolving_to_a_private_address_is_not_contacted():
    """A URL that passed the literal check but whose name resolves to a non-public address (the machine's
    own host name here) is refused before any connection, and not retried."""
    import socket

    host = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, 80)}
    except OSError:
        pytest.skip("this machine's host name does not resolve")
    if not any(webhooks._non_global(a) for a in addresses):
        pytest.skip("this machine's host name resolves to a public address")
    with WebhookReceiver() as receiver:
        port = receiver.url.split(":")[2].split("/")[0]
        url = f"http://{host}:{port}/hook"
        assert webhooks.literal_destination_refused(url) is None
        delivery = webhooks.deliver(url, b"{}", SECRET, event="run.finished", timeout=2, max_attempts=3)
        assert not delivery.delivered and delivery.attempts == 0
        assert delivery.error.startswith(f"refused: {host} resolves to "), delivery.error
    assert receiver.received == []


def test_a_pending_webhook_is_delivered_by_the_next_worker(settings, tmp_path):
    hooked = settings.model_copy(
        update={"webhook_secret": SecretStr(SECRET), "webhook_allow_private": True, "webhook_max_attempts": 3}
    )
    db = open_database(hooked)
    try:
        with WebhookReceiver() as receiver:
            _enqueue(db, "run-w", ["export"], webhook_url=receiver.url)
            stopping = QueueWorker(db, hooked, out_dir=tmp_path / "out", webhook_backoff=FAST)
            stopping.stop.set()  # stopped: it executes nothing and leaves the webhook to others
            assert stopping.drain() == 0
            worker = QueueWorker(db, hooked, out_dir=tmp_path / "out", webhook_backoff=FAST)
            row = RunQueueStore(db).claim(worker.worker_id, worker.lease)
            assert row is not None
            assert RunQueueStore(db).finish(
                "run-w", worker.worker_id, status="failed", progress={}, counts={}, error="x"
            )
            assert RunQueueStore(db).get("run-w")["webhook_status"] == "pending"
            QueueWorker(db, hooked, out_dir=tmp_path / "out", webhook_backoff=FAST).housekeeping()
            row = RunQueueStore(db).get("run-w")
    finally:
        db.close()
    assert len(receiver.received) == 1
    assert json.loads(receiver.received[0].body)["status"] == "failed"
    assert row["webhook_status"] == "delivered" and row["webhook_attempts"] == 1


def test_a_webhook_being_delivered_is_not_delivered_again_by_another_worker(settings, tmp_path):
    hooked = settings.model_copy(
        update={"webhook_secret": SecretStr(SECRET), "webhook_allow_private": True, "webhook_max_attempts": 3}
    )
    first_arrived, answer_first = threading.Event(), threading.Event()

    def hold_the_first(index: int) -> None:
        if index == 0:
            first_arrived.set()
            answer_first.wait(10)

    databases = [open_database(hooked) for _ in range(2)]
    try:
        with WebhookReceiver(script=[500], before_answer=hold_the_first) as receiver:
            db = databases[0]
            _enqueue(db, "run-d", ["export"], webhook_url=receiver.url)
            executing = QueueWorker(db, hooked, out_dir=tmp_path / "a", webhook_backoff=FAST)
            # Worker A executes the run and starts delivering its webhook; the receiver holds the
            # first attempt (then answers 500, so A retries).
            delivering = threading.Thread(target=executing.drain, name="worker-a")
            delivering.start()
            assert first_arrived.wait(20), "the webhook never arrived"
            # Meanwhile worker B tidies up: the webhook is A's to deliver, not B's.
            other = QueueWorker(databases[1], hooked, out_dir=tmp_path / "b", webhook_backoff=FAST)
            other.housekeeping()
            answer_first.set()
            delivering.join(timeout=20)
            assert not delivering.is_alive()
            other.housekeeping()  # after A is done there is nothing left to deliver either
            row = RunQueueStore(db).get("run-d")
    finally:
        answer_first.set()
        for database in databases:
            database.close()
    assert len(receiver.received) == 2, [r.headers.get("x-tg-parser-event") for r in receiver.received]
    assert row["webhook_status"] == "delivered"
    assert row["webhook_attempts"] == 2
    assert row["webhook_error"] is None


# --- a worker killed mid-run ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_worker_leaves_its_run_running_until_the_lease_lapses(settings, tmp_path):
    """`tg-parser worker` is SIGKILLed while its run waits on the LLM; the run stays 'running' while
    the lease is live, and once RUN_LEASE_SECONDS lapses another worker fails it."""
    assert cli(settings, "ingest", "--from-export", str(EXAMPLE)).exit_code == 0
    release = threading.Event()
    with LlmServer() as llm:

        def blocked(request):
            release.wait(30)
            return structured(request, processed_document_content(request))

        llm.on(lambda request: True, blocked)
        db = open_database(settings)
        try:
            _enqueue(db, "run-k", ["process"], source_id=EXAMPLE_SOURCE, options={"processor": "llm"})
            env = cli_env(
                settings, llm.base_url, RUN_LEASE_SECONDS="2", WORKER_POLL_SECONDS="0.1", OPENAI_API_KEY="k"
            )
            store = RunQueueStore(db)
            with ServeProcess(
                env, "worker", "--out", str(tmp_path / "out"), log=tmp_path / "worker.log"
            ) as worker:
                wait_for(lambda: llm.requests, 30, what="the run to reach the LLM")
                running = store.get("run-k")
                assert running["status"] == "running", running
                worker.kill()
                killed_at = time.time()
                survivor = QueueWorker(db, settings, out_dir=tmp_path / "out")
                survivor.housekeeping()
                assert store.get("run-k")["status"] == "running"  # the lease is still live
                lease_end = store.get("run-k")["lease_expires_at"]
                wait_for(
                    lambda: (survivor.housekeeping(), store.get("run-k")["status"] == "failed")[1],
                    10,
                    interval=0.1,
                    what="the lapsed run to be failed",
                )
                failed = store.get("run-k")
        finally:
            release.set()
            db.close()
    assert failed["finished_at"] >= lease_end
    assert time.time() - killed_at < 10
    assert "stopped renewing its lease" in failed["error"]
    assert failed["lease_expires_at"] is None


@pytest.mark.slow
def test_two_worker_processes_share_the_queue(pg_only_settings, tmp_path):
    """Two `tg-parser worker` processes on PostgreSQL (FOR UPDATE SKIP LOCKED): each run once."""
    settings = pg_only_settings
    seed_example(settings, tmp_path / "seed-out")
    env = cli_env(settings, WORKER_POLL_SECONDS="0.05")
    workers = [
        ServeProcess(env, "worker", "--out", str(tmp_path / f"out-{n}"), log=tmp_path / f"worker-{n}.log")
        for n in range(2)
    ]
    db = open_database(settings)
    try:
        for worker in workers:
            wait_for(lambda w=worker: "waiting for runs" in w.output(), 30, what="a worker to start")
        runs = [f"run-{i}" for i in range(8)]
        for run_id in runs:
            _enqueue(db, run_id, ["process", "export"], source_id=EXAMPLE_SOURCE)
        store = RunQueueStore(db)
        wait_for(
            lambda: all(store.get(r)["status"] in ("succeeded", "failed") for r in runs),
            60,
            interval=0.1,
            what="every run to finish",
        )
        rows = [store.get(r) for r in runs]
        processing_runs = [
            r.run_id
            for r in ProcessingStore(db).recent_runs("process", limit=100)
            if r.run_id.startswith("run-")
        ]
    finally:
        db.close()
        codes = [worker.terminate(timeout=30) for worker in workers]
    assert all(row["status"] == "succeeded" for row in rows), rows
    assert sorted(processing_runs) == sorted(f"{r}-process-{EXAMPLE_SOURCE}" for r in runs)
    assert len({row["worker_id"] for row in rows}) in (1, 2)
    assert codes == [0, 0], [w.output() for w in workers]
