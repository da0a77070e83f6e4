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
from datetime import timedelta

import pytest
from support import llm_server as srv
from support.llm_server import LlmServer
from support.process_data import START, cli_env, seed_messages
from support.waiting import wait_for

from tg_parser.db import migrations
from tg_parser.db.connect import open_database
from tg_parser.db.migrations import dialect_of
from tg_parser.domain.models import ProcessedDocument, RunReport
from tg_parser.stores import ProcessingStore

LEASE = timedelta(minutes=1)
# How long the process tests wait for a condition (a process to start, a lease to be taken over): far
# beyond what it takes on an idle machine, so only a real hang fails, not a loaded machine.
PATIENCE = 180.0


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
    """A `process` worker whose requests wait as long as the server makes them (LLM_TIMEOUT): on a loaded
    machine a held or hanging request must not time out and be sent again (a retried hanging request
    answered would let the doomed worker process, and claim, more than the test gave it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tg_parser", "process", *args],
        env={**os.environ, **cli_env(settings, server.base_url, **{"LLM_TIMEOUT": "3600", **env})},
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
@pytest.mark.timeout(480)  # real processes; minutes on a loaded machine
def test_a_running_worker_takes_over_a_killed_workers_messages_and_marks_its_run(db, settings, server):
    # A live worker renews every quarter of the lease: only a stall of a whole lease (a loaded machine)
    # would let the other worker take a live lease over. Ten seconds keeps that out of reach; the test
    # waits for conditions, never for the lease's length, so a longer lease only costs its own wait.
    lease = 10.0
    total = 150
    seed_messages(db, total)
    server.latency = 0.1
    # The doomed worker's first ten requests are answered; the three after them never come back.
    arrivals = itertools.count(1)
    server.on(lambda request: next(arrivals) > 10, srv.Reply(delay=600), times=3)
    # From the kill until the test has seen the dead worker's leases taken over, the survivor's requests
    # are held: it cannot run out of work (and leave) before they lapse, however fast or slow it runs.
    holding, released = threading.Event(), threading.Event()

    def answer_once_released(request):
        released.wait(PATIENCE)
        return srv.structured(request, srv.processed_document_content(request))

    server.on(lambda request: holding.is_set(), answer_once_released)
    doomed = start_worker(settings, server, "--concurrency", "3", "--lease-seconds", str(lease))

    def doomed_run():
        runs = [r for r in read(settings, lambda s: s.recent_runs("process")) if r.status == "running"]
        return runs[0] if runs else None

    def doomed_processed() -> int:
        run = doomed_run()
        return run.counts.get("processed", 0) if run is not None else 0

    wait_for(lambda: len(server.requests) >= 13, PATIENCE, "the doomed worker's requests")
    wait_for(lambda: doomed_processed() == 10, PATIENCE, "the doomed worker's first ten documents")
    dead_run = doomed_run()
    assert dead_run is not None
    survivor = start_worker(settings, server, "--concurrency", "2", "--lease-seconds", str(lease), "--json")
    try:
        wait_for(lambda: len(server.requests) >= 15, PATIENCE, "the surviving worker's first requests")
        holding.set()
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

        # Taken over by the running survivor: its lease on each of them. A claim writes expires_at = now +
        # lease, and a renewal only moves it later, so the first one seen bounds the takeover time above.
        taken_at = {}

        def taken_over() -> bool:
            for lease_row in read(settings, lambda s: s.leases()):
                if lease_row.source_ref in dead_leases and lease_row.worker_id != dead_worker:
                    taken_at.setdefault(lease_row.source_ref, lease_row.expires_at - timedelta(seconds=lease))
            return len(taken_at) == len(dead_leases)

        wait_for(taken_over, PATIENCE, "the survivor to take over the dead worker's leases")
    finally:
        released.set()
        holding.clear()
    stdout, stderr = survivor.communicate(timeout=PATIENCE)
    assert survivor.returncode == 0, stderr
    report = json.loads(stdout)
    counts = report["counts"]
    # by this running worker, not by a later run
    assert counts["taken_over"] == len(dead_leases), (counts, sorted(dead_leases), stderr)
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

    # taken over at the quarter-lease checks after the lapse (each takes up to the high water of claims,
    # 2 x concurrency = 4), not at the end of the run; two more checks of slack for a busy machine and
    # for a renewal seen instead of the claim
    delays = [(at - lapsed_at).total_seconds() for at in taken_at.values()]
    checks = -(-len(dead_leases) // 4)
    print(f"takeover: {min(delays):.2f}-{max(delays):.2f} s after the lease lapsed (lease {lease} s)")
    assert max(delays) < (checks + 2) * lease / 4


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
        all_busy.wait(PATIENCE)
        return srv.structured(request, srv.processed_document_content(request))

    def rate_limited(request):
        limited_at.append(request.received_at)
        return srv.error(429, "slow down", retry_after=retry_after)

    server.on(lambda request: True, once_all_are_busy, times=6)
    server.on(lambda request: True, rate_limited, times=1)
    workers = [start_worker(settings, server, "--concurrency", "2", "--json", **env) for _ in range(3)]
    reports = []
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=PATIENCE)
        assert worker.returncode == 0, stderr
        reports.append(json.loads(stdout))
    assert len(limited_at) == 1
    assert sum(r["counts"]["processed"] for r in reports) == total, [r["counts"] for r in reports]
    sent = server.counts_by_message()
    assert len(sent) == total and sorted(sent.values())[-2:] == [1, 2]  # only the 429'd one went twice
    return limited_at[0], reports


def sent_between(server: LlmServer, start: float, end: float) -> int:
    return sum(1 for request in server.requests if start <= request.received_at <= end)


# The pause a 429 asks for, and the window of it in which the tests count requests: it opens GRACE
# seconds after the 429 (the pause is published and read four times a second; the rest is slack for a
# loaded machine, where a process may not run for a while) and closes just before the pause ends.
RETRY_AFTER = 6.0
GRACE = 2.0


def sent_during_the_pause(server: LlmServer, limited: float) -> int:
    return sent_between(server, limited + GRACE, limited + RETRY_AFTER - 0.3)


@pytest.mark.slow
@pytest.mark.timeout(480)  # real processes; minutes on a loaded machine
def test_one_429_pauses_every_process_using_the_same_endpoint_and_key(db, settings, server):
    total = 240
    seed_messages(db, total)
    server.latency = 0.05
    key = "sk-test-shared-pause-0123456789"
    limited, _ = run_three_workers(settings, server, total, RETRY_AFTER, OPENAI_API_KEY=key)
    # Once the pause is shared (published within a quarter second, read as often), nobody sends.
    during = sent_during_the_pause(server, limited)
    after = sent_between(server, limited + RETRY_AFTER, limited + 600)
    print(f"shared pause: {during} request(s) during the pause, {after} after it")
    assert during == 0
    assert after > 0  # the work went on after the pause
    # the pause is kept under a hash of the endpoint and key, never the key itself
    expected = hashlib.sha256(f"{server.base_url}\n{key}".encode()).hexdigest()
    assert read(settings, lambda s: s.llm_pause_until(expected)) is not None


@pytest.mark.slow
@pytest.mark.timeout(480)  # real processes; minutes on a loaded machine
def test_without_the_shared_pause_the_other_processes_keep_sending(db, settings, server):
    """The control: LLM_SHARED_PAUSE=0 pauses only the process that got the 429."""
    total = 240
    seed_messages(db, total)
    # The two others keep sending through the whole window: their ~230 messages, four in flight, take
    # 230 / 4 * 0.15 = 8.6 s at the least (longer on a slower machine), past the pause's end.
    server.latency = 0.15
    limited, _ = run_three_workers(settings, server, total, RETRY_AFTER, LLM_SHARED_PAUSE="0")
    during = sent_during_the_pause(server, limited)
    print(f"no shared pause: {during} request(s) during the pause")
    assert during > 0
