"""The scan's helper processes: a helper that dies or hangs fails the run with one error, at once or at
the deadline; nothing is written and no helper is left behind."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest

from tests.conftest import sqlite_settings
from tests.test_transfer_roundtrip import options, populate, table_counts_pg
from tg_parser.transfer import parallel, run_transfer, worker
from tg_parser.transfer.scan import Unit, UnitResult

# The helpers import this module to run the functions below (pickled by name); the real task stays
# reachable under its own name.
_scan = worker.scan


def _dies(unit: Unit, strip_nul: bool, limit: int, check_utf8: bool) -> UnitResult:
    if unit.table.qualified == "raw.raw_messages":
        os._exit(3)  # as if killed (out of memory, a crash in C)
    return _scan(unit, strip_nul, limit, check_utf8)


def _hangs(unit: Unit, strip_nul: bool, limit: int, check_utf8: bool) -> UnitResult:
    if unit.table.qualified == "raw.raw_messages" and unit.index == 1:
        time.sleep(3600)
    return _scan(unit, strip_nul, limit, check_utf8)


@pytest.fixture
def installed(sqlite_dir):
    populate(sqlite_settings(sqlite_dir))


def short_deadline(monkeypatch, grace: float = 3.0) -> None:
    """A helper hangs once no range has finished for `grace` seconds (a death is seen at once)."""
    monkeypatch.setattr(parallel, "GRACE", grace)
    monkeypatch.setattr(parallel, "SECONDS_PER_ROW", 0.0)


@pytest.mark.parametrize(("task", "error"), [(_dies, "died"), (_hangs, "stopped answering")])
@pytest.mark.parametrize("dry_run", [False, True])
def test_a_helper_that_dies_or_hangs_fails_the_run(
    installed, sqlite_dir, pg_only_settings, monkeypatch, task, error, dry_run
):
    if task is _hangs:
        short_deadline(monkeypatch)
    monkeypatch.setattr(worker, "scan", task)
    started = time.monotonic()
    report = run_transfer(options(sqlite_dir, pg_only_settings, workers=3, dry_run=dry_run))
    assert report.status == "failed" and report.exit_code == 1, report.error
    assert f"a scan helper process {error}" in (report.error or "")
    assert "\n" not in (report.error or "")
    assert time.monotonic() - started < 60
    assert not report.committed
    assert not any(table_counts_pg(pg_only_settings).values())
    assert not multiprocessing.active_children(), "a helper was left running"


def test_db_checksum_with_a_hung_helper_fails(installed, sqlite_dir, monkeypatch):
    """The same deadline holds where the parent scans beside the helpers (`db checksum`)."""
    from tg_parser.transfer import database_checksums
    from tg_parser.transfer.errors import HelperFailed

    short_deadline(monkeypatch)
    monkeypatch.setattr(worker, "scan", _hangs)
    monkeypatch.setattr(parallel, "DEPTH", 64)  # the hanging range goes to the helper, not the parent
    with pytest.raises(HelperFailed, match="stopped answering"):
        database_checksums(sqlite_settings(sqlite_dir), workers=2)
    assert not multiprocessing.active_children()


def test_helpers_exit_after_a_run(installed, sqlite_dir, pg_only_settings):
    report = run_transfer(options(sqlite_dir, pg_only_settings, workers=3))
    assert report.status == "ok", report.error
    assert not multiprocessing.active_children()
