"""Several `tg-parser process` processes on one database, a killed worker, and Ctrl-C — real processes.

The processes talk to the local OpenAI-compatible server run by the test, which counts the requests
each message received: exactly-once processing is checked there, where a duplicate would cost money.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading

import pytest
from support import llm_server as srv
from support.llm_server import LlmServer
from support.process_data import cli_env, llm_settings, message_text, seed_messages
from support.waiting import wait_for

from tg_parser.db.connect import open_database
from tg_parser.llm import LlmClient, LlmConfig
from tg_parser.processing import LlmDocumentProcessor, ProcessCoordinator, ProcessOptions
from tg_parser.stores import ProcessingStore

# Real processes on a machine that may be loaded: every wait is for a condition, with room to spare.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]
PATIENCE = 180.0
# The workers' requests wait as long as the test server makes them (a held or hanging request must not
# time out and be sent again).
NO_CLIENT_TIMEOUT = {"LLM_TIMEOUT": "3600"}


@pytest.fixture
def server():
    with LlmServer() as running:
        yield running


def start_worker(settings, server: LlmServer, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tg_parser", "process", *args],
        env={**os.environ, **cli_env(settings, server.base_url, **NO_CLIENT_TIMEOUT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_in_process(db, settings, server, **options):
    client = LlmClient(LlmConfig.from_settings(llm_settings(settings, server.base_url)), backoff_base=0.01)
    try:
        return ProcessCoordinator(db, LlmDocumentProcessor.load(client), ProcessOptions(**options)).run()
    finally:
        client.close()


def test_three_workers_never_send_a_message_twice(db, settings, server):
    """On PostgreSQL the leases decide; on SQLite the same, with writers queued by BEGIN IMMEDIATE."""
    total = 120
    seed_messages(db, total)
    server.latency = 0.05
    # The first answers wait until all three workers have four requests in flight: a worker that starts
    # late (on a busy machine) still finds the others mid-run instead of finished.
    arrived, all_busy = itertools.count(1), threading.Event()

    def once_all_are_busy(request):
        if next(arrived) >= 12:
            all_busy.set()
        all_busy.wait(PATIENCE)
        return srv.structured(request, srv.processed_document_content(request))

    server.on(lambda request: True, once_all_are_busy, times=12)
    workers = [start_worker(settings, server, "--concurrency", "4", "--json") for _ in range(3)]
    reports = []
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=PATIENCE)
        assert worker.returncode == 0, stderr
        assert "database is locked" not in stderr
        reports.append(json.loads(stdout))
    counts = server.counts_by_message()
    assert len(counts) == total and set(counts.values()) == {1}  # every message sent exactly once
    assert sum(r["counts"]["claimed"] for r in reports) == total
    assert sum(r["counts"]["processed"] for r in reports) == total
    assert sum(1 for r in reports if r["counts"]["processed"]) >= 2  # the work was shared
    assert ProcessingStore(db).count_documents() == total
    assert ProcessingStore(db).leases() == []


def test_a_killed_workers_leases_lapse_and_its_messages_are_picked_up(db, settings, server, store_clock):
    seed_messages(db, 6)
    server.latency = 60.0  # the doomed worker's requests never come back
    # A lease no slow machine outlasts between the kill and the next run: this process's clock, not
    # the wall clock, makes it lapse.
    lease = 600
    doomed = start_worker(settings, server, "--concurrency", "3", "--lease-seconds", str(lease))
    wait_for(lambda: len(server.requests) >= 3, PATIENCE, "the worker's first requests")
    store = ProcessingStore(db)
    wait_for(lambda: len(store.leases()) == 6, PATIENCE, "the worker's leases")
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=PATIENCE)
    server.latency = 0.0

    early = run_in_process(db, settings, server)
    assert early.counts.claimed == 0  # the leases are still valid: nothing is sent twice
    assert len(server.requests) == 3

    store_clock.advance(lease + 1)  # the leases lapse (for this process, which runs the next worker)
    late = run_in_process(db, settings, server)
    assert late.counts.processed == 6
    assert store.count_documents() == 6 and store.leases() == []
    counts = server.counts_by_message()
    assert sorted(counts.values()) == [1, 1, 1, 2, 2, 2]  # only the killed worker's in-flight three again


def test_ctrl_c_keeps_finished_documents_and_writes_nothing_half_done(db, settings, server):
    total = 200  # finishing them all would take 200 / 2 × 0.4 = 40 s
    seed_messages(db, total)
    server.latency = 0.4
    worker = start_worker(settings, server, "--concurrency", "2", "--json")
    store = ProcessingStore(db)

    def written() -> int:
        probe = open_database(settings)
        try:
            return ProcessingStore(probe).count_documents()
        finally:
            probe.close()

    wait_for(lambda: written() >= 2, PATIENCE, "the first documents")
    # From now on a request is answered after ten minutes: a worker that waited for its requests in
    # flight instead of abandoning them would not exit before the test gives up on it.
    sent = len(server.requests)
    server.latency = 600.0
    wait_for(lambda: len(server.requests) > sent, PATIENCE, "a request that will not come back in time")
    worker.send_signal(signal.SIGINT)
    stdout, stderr = worker.communicate(timeout=PATIENCE)
    assert worker.returncode == 130, stderr
    assert "Stopping" in stderr and "Traceback" not in stderr
    report = json.loads(stdout)
    assert report["status"] == "interrupted"
    count = store.count_documents()
    assert 2 <= count < total and report["counts"]["processed"] == count
    assert store.leases() == []
    assert store.get_run(report["run_id"]).status == "interrupted"
    by_ref = {d.source_ref: d for d in store.stream_documents()}
    for ref, document in by_ref.items():
        message_id = int(ref.rsplit(":", 1)[1])
        assert document.text_clean == message_text(message_id)  # whole documents only
        assert document.input_tokens and document.prompt_id

    server.latency = 0.0
    rest = run_in_process(db, settings, server)
    assert rest.counts.processed == total - count
    assert store.count_documents() == total
