"""Recovery of dead workers and the 429 pause shared by processes (issue 14), on both dialects.

The store tests move the stores' clock instead of sleeping. The process tests run real `tg-parser
process` processes against the local OpenAI-compatible server: one is killed with SIGKILL while another
runs (its messages must be taken over by the running one, its run marked abandoned), and three share
one endpoint and key while one of them receives a 429 with Retry-After (the others must pause too).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from support import llm_server as srv
from support.llm_server import LlmServer
from support.process_data import START, cli_env, seed_messages

from tg_parser.db import migrations
from tg_parser.db.connect import open_database
from tg_parser.db.migrations import dialect_of
from tg_parser.domain.models import ProcessedDocument, RunReport
from tg_parser.stores import ProcessingStore

LEASE = timedelta(minutes=1)


def wait_for(condition, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# --- the store: run heartbeats, lapsed leases, the shared pause ---------------------------------------


def test_a_run_whose_heartbeat_lapsed_is_marked_abandoned_with_its_counts(db, store_clock):
    store = ProcessingStore(db)
    for run_id in ("dead", "alive"):
        store.start_run(RunReport(run_id=run_id, kind="process", started_at=START))
    store.hold_run("dead", "host:1:dead", LEASE)
    store.hold_run("alive", "host:2:alive", 10 * LEASE)
    store.run_progress("dead", {"processed": 7, "failed": 1})
    assert store.abandon_lapsed_runs() == []  # nobody lapsed yet

    store_clock.advance(61)
    assert store.abandon_lapsed_runs() == ["dead"]
    dead = store.get_run("dead")
    assert dead is not None and dead.status == "failed"
    assert dead.error is not None and dead.error.startswith("abandoned: its worker host:1:dead")
    assert dead.counts == {"processed": 7, "failed": 1}  # what it had written is counted
    assert dead.finished_at is not None and dead.finished_at < store.now()
    alive = store.get_run("alive")
    assert alive is not None and alive.status == "running"
    assert store.abandon_lapsed_runs() == []  # recorded once
    # the dead run's process, had it only stalled, learns it was declared abandoned
    assert store.renew_run("dead", "host:1:dead", LEASE) is False
    assert store.renew_run("alive", "host:2:alive", LEASE) is True
    store.run_progress("dead", {"processed": 99})  # a failed run's counts are not overwritten
    assert store.get_run("dead").counts == {"processed": 7, "failed": 1}  # type: ignore[union-attr]


def test_only_other_workers_lapsed_leases_on_queued_messages_are_taken_over(db, store_clock):
    refs = seed_messages(db, 5)
    store = ProcessingStore(db)
    assert store.claim(refs[:3], "dead", LEASE) == refs[:3]
    assert store.claim(refs[3:4], "alive", 10 * LEASE) == refs[3:4]
    store.upsert_documents(  # the dead worker finished refs[0] before it died
        [
            ProcessedDocument(
                source_ref=refs[0],
                channel_id=100,
                message_date=START,
                text_clean="x",
                model="m",
                prompt_id="p",
                pipeline_version="1",
            )
        ]
    )
    assert store.pending_page(limit=10, lapsed_for="me", lock=True) == []  # nothing lapsed yet

    store_clock.advance(61)
    lapsed = store.pending_page(limit=10, lapsed_for="me", lock=True)
    assert [row["source_ref"] for row in lapsed] == refs[1:3]  # not the done one, not a live lease
    assert lapsed[0]["text"] and lapsed[0]["channel_id"] == 100  # the columns a claim hands out
    assert store.pending_page(limit=1, lapsed_for="me", lock=True)[0]["source_ref"] == refs[1]
    assert store.pending_page(limit=10, lapsed_for="dead", lock=True) == []  # its own are not "other"
    assert store.pending_page(limit=10, lapsed_for="me", channel_id=999, lock=True) == []
    assert store.claim(refs[1:3], "me", LEASE) == refs[1:3]  # an expired lease is taken over
    assert store.pending_page(limit=10, lapsed_for="other", lock=True) == []


def test_a_published_pause_keeps_the_latest_deadline(db):
    store = ProcessingStore(db)
    now = store.now()
    assert store.llm_pause_until("k") is None
    store.publish_llm_pause("k", now + timedelta(seconds=30), now)
    store.publish_llm_pause("k", now + timedelta(seconds=5), now)  # an earlier one does not shorten it
    assert store.llm_pause_until("k") == now + timedelta(seconds=30)
    store.publish_llm_pause("k", now + timedelta(seconds=60), now)
    assert store.llm_pause_until("k") == now + timedelta(seconds=60)
    assert store.llm_pause_until("other") is None


def test_recovery_migration_rolls_back_and_up(settings):
    dialect = dialect_of(settings)
    ids = migrations.expected_ids(dialect, "processing")
    assert ids[-1] == "0006.recovery"
    db = open_database(settings)
    try:
        store = ProcessingStore(db)
        store.start_run(RunReport(run_id="r", kind="process", started_at=START))
    finally:
        db.close()
    assert migrations.rollback(settings, "processing", 1) == ["0006.recovery"]
    (status,) = migrations.status(settings, ("processing",))
    assert status.pending == ["0006.recovery"]
    assert migrations.upgrade(settings, ("processing",)) == {"processing": ["0006.recovery"]}
    db = open_database(settings)
    try:
        store = ProcessingStore(db)
        assert store.get_run("r") is not None  # the run reports survived the round trip
        store.hold_run("r", "w", LEASE)
        assert store.renew_run("r", "w", LEASE)
    finally:
        db.close()


# --- real processes -------------------------------------------------------------------------------


@pytest.fixture
def server():
    with LlmServer() as running:
        yield running


def start_worker(settings, server: LlmServer, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tg_parser", "process", *args],
        env={**os.environ, **cli_env(settings, server.base_url, **env)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read(settings, what):
    probe = open_database(settings)
    try:
        return what(ProcessingStore(probe))
    finally:
        probe.close()


@pytest.mark.slow
@pytest.mark.timeout(300)  # real processes; minutes on a loaded machine
def test_a_running_worker_takes_over_a_killed_workers_messages_and_marks_its_run(db, settings, server):
    lease = 3.0
    total = 150
    seed_messages(db, total)
    server.latency = 0.1
    # The doomed worker's first ten requests are answered; the three after them never come back.
    arrivals = itertools.count(1)
    server.on(lambda request: next(arrivals) > 10, srv.Reply(delay=600), times=3)
    doomed = start_worker(settings, server, "--concurrency", "3", "--lease-seconds", str(lease))

    def doomed_run():
        runs = [r for r in read(settings, lambda s: s.recent_runs("process")) if r.status == "running"]
        return runs[0] if runs else None

    def doomed_processed() -> int:
        run = doomed_run()
        return run.counts.get("processed", 0) if run is not None else 0

    wait_for(lambda: len(server.requests) >= 13, what="the doomed worker's requests")
    wait_for(lambda: doomed_processed() == 10, what="the doomed worker's first ten documents")
    dead_run = doomed_run()
    assert dead_run is not None
    survivor = start_worker(settings, server, "--concurrency", "2", "--lease-seconds", str(lease), "--json")
    wait_for(lambda: len(server.requests) >= 15, what="the surviving worker's first requests")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=30)
    dead_worker = dead_run.params["worker_id"]
    dead_leases = {
        held.source_ref: held.expires_at
        for held in read(settings, lambda s: s.leases())
        if held.worker_id == dead_worker
    }
    assert len(dead_leases) >= 3  # the three requests that never came back, and the claimed next ones
    lapsed_at = max(dead_leases.values())

    stdout, stderr = survivor.communicate(timeout=180)
    assert survivor.returncode == 0, stderr
    report = json.loads(stdout)
    counts = report["counts"]
    assert counts["taken_over"] == len(dead_leases), counts  # by this running worker, not by a later run
    assert counts["processed"] == total - 10

    # every message has one document; only the three requests that never came back were sent again
    assert read(settings, lambda s: s.count_documents()) == total
    assert read(settings, lambda s: s.leases()) == []
    sent = server.counts_by_message()
    assert len(sent) == total and sorted(sent.values()).count(2) == 3 and max(sent.values()) == 2

    # the dead run is marked, with what it had written
    dead = read(settings, lambda s: s.get_run(dead_run.run_id))
    assert dead is not None and dead.status == "failed" and dead.error.startswith("abandoned:")
    assert dead.counts["processed"] == 10

    # taken over at the first quarter-lease check after the lapse; written once the requests queued ahead
    # of them (up to a high water mark of claims) and its own are done, with a busy machine's slack
    taken = [read(settings, lambda s, ref=ref: s.get_document(ref)) for ref in dead_leases]
    delays = [(doc.processed_at - lapsed_at).total_seconds() for doc in taken if doc is not None]
    print(f"takeover: {min(delays):.2f}-{max(delays):.2f} s after the lease lapsed (lease {lease} s)")
    assert len(delays) == len(dead_leases) and all(d > 0 for d in delays)
    assert max(delays) < lease / 4 + 5.0


def run_three_workers(settings, server: LlmServer, total: int, retry_after: float, **env: str):
    """Three `process` workers on one endpoint and key; one request (the seventh, when all three are
    sending) gets a 429 with Retry-After. Returns the 429's arrival time and the reports."""
    # The first six answers wait until six requests arrived: with two in flight each, all three workers
    # are then sending (a late starter on a busy machine still finds the others mid-run).
    arrived, all_busy = itertools.count(1), threading.Event()
    limited_at: list[float] = []

    def once_all_are_busy(request):
        if next(arrived) >= 6:
            all_busy.set()
        all_busy.wait(120)
        return srv.structured(request, srv.processed_document_content(request))

    def rate_limited(request):
        limited_at.append(request.received_at)
        return srv.error(429, "slow down", retry_after=retry_after)

    server.on(lambda request: True, once_all_are_busy, times=6)
    server.on(lambda request: True, rate_limited, times=1)
    workers = [start_worker(settings, server, "--concurrency", "2", "--json", **env) for _ in range(3)]
    reports = []
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=180)
        assert worker.returncode == 0, stderr
        reports.append(json.loads(stdout))
    assert len(limited_at) == 1
    assert sum(r["counts"]["processed"] for r in reports) == total
    sent = server.counts_by_message()
    assert len(sent) == total and sorted(sent.values())[-2:] == [1, 2]  # only the 429'd one went twice
    return limited_at[0], reports


def sent_between(server: LlmServer, start: float, end: float) -> int:
    return sum(1 for request in server.requests if start <= request.received_at <= end)


@pytest.mark.slow
@pytest.mark.timeout(300)  # real processes; minutes on a loaded machine
def test_one_429_pauses_every_process_using_the_same_endpoint_and_key(db, settings, server):
    total, retry_after = 240, 3.0
    seed_messages(db, total)
    server.latency = 0.05
    key = "sk-test-shared-pause-0123456789"
    limited, _ = run_three_workers(settings, server, total, retry_after, OPENAI_API_KEY=key)
    # Once the pause is shared (published within a quarter second, read as often), nobody sends.
    during = sent_between(server, limited + 1.0, limited + retry_after - 0.3)
    after = sent_between(server, limited + retry_after, limited + 600)
    print(f"shared pause: {during} request(s) during the pause, {after} after it")
    assert during == 0
    assert after > 0  # the work went on after the pause
    # the pause is kept under a hash of the endpoint and key, never the key itself
    expected = hashlib.sha256(f"{server.base_url}\n{key}".encode()).hexdigest()
    assert read(settings, lambda s: s.llm_pause_until(expected)) is not None


@pytest.mark.slow
@pytest.mark.timeout(300)  # real processes; minutes on a loaded machine
def test_without_the_shared_pause_the_other_processes_keep_sending(db, settings, server):
    """The control: LLM_SHARED_PAUSE=0 pauses only the process that got the 429."""
    total, retry_after = 240, 3.0
    seed_messages(db, total)
    server.latency = 0.05
    limited, _ = run_three_workers(settings, server, total, retry_after, LLM_SHARED_PAUSE="0")
    during = sent_between(server, limited + 1.0, limited + retry_after - 0.3)
    print(f"no shared pause: {during} request(s) during the pause")
    assert during > 0
