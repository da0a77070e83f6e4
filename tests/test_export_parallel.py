"""An export split over processes (--jobs N) writes the same bytes as one process, on both dialects, and a
failed helper fails the whole export with one error and nothing half-written."""

from __future__ import annotations

import multiprocessing
import os
import signal
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.cli import db_env
from test_export import PRIVATE, PUBLIC, T0, _seed, _seed_hostile

from tg_parser.cli import cmd_export
from tg_parser.cli.main import cli
from tg_parser.errors import TgParserError
from tg_parser.export import ExportFilters, export
from tg_parser.export.parallel import AUTO_MIN_DOCUMENTS, HELPER_HEAD_START, auto_jobs, head_start
from tg_parser.stores.base import FAR_FUTURE, FAR_PAST
from tg_parser.stores.export import ExportStore


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def _seeded(db) -> str:
    topic = _seed(db)["topic"]
    _seed_hostile(db)
    return topic


# Export windows (channel, since, until): every filter the split honours, each with documents in both
# channels or across days, so a range boundary falls inside it.
WINDOWS = {
    "all": (None, FAR_PAST, FAR_FUTURE),
    "channel": (PUBLIC, FAR_PAST, FAR_FUTURE),
    "window": (None, T0 + timedelta(days=2), T0 + timedelta(days=4)),
    "channel_window": (PRIVATE, T0 + timedelta(days=3), FAR_FUTURE),
}


def test_split_keys_cut_the_order_into_disjoint_ranges(db):
    """Every window's order cut into ranges: checked here, in the store, for each filter, so that the
    byte-for-byte test below needs a helper process only for what the helpers themselves do."""
    _seeded(db)
    store = ExportStore(db)
    for name, window in WINDOWS.items():
        whole = [row for batch in store.document_batches(*window) for row in batch]
        documents = store.count_documents(*window)
        assert documents == len(whole) >= 3, name
        for parts in (2, 3, 5, documents, documents + 7):
            keys = store.split_keys(*window, parts=parts, documents=documents)
            assert len(keys) == min(parts, documents) - 1, (name, parts)
            bounds = list(zip([None, *keys], [*keys, None], strict=True))
            pieces = [
                [row for batch in store.document_batches(*window, 3, after=a, upto=u) for row in batch]
                for a, u in bounds
            ]
            assert all(pieces), (name, parts)  # no empty range
            assert [row for piece in pieces for row in piece] == whole, (name, parts)
    assert store.split_keys(PRIVATE, T0 + timedelta(days=900), FAR_FUTURE, parts=2, documents=0) == []


def test_the_exporting_process_gets_a_head_start(db):
    _seeded(db)
    store = ExportStore(db)
    window = (None, FAR_PAST, FAR_FUTURE)
    documents = store.count_documents(*window)

    def sizes(parts: int, extra: int) -> list[int]:
        keys = store.split_keys(*window, parts=parts, documents=documents, first_extra=extra)
        bounds = list(zip([None, *keys], [*keys, None], strict=True))
        return [sum(len(b) for b in store.document_batches(*window, after=a, upto=u)) for a, u in bounds]

    even = sizes(2, 0)
    ahead = sizes(2, 4)
    assert sum(ahead) == sum(even) == documents
    assert abs(ahead[0] - ahead[1] - 4) <= 1  # the head start, give or take the odd one out
    # More head start than there are documents: capped, every part keeps one document at least.
    assert sizes(3, documents * 10) == [documents - 2, 1, 1]
    # The default head start is the constant for a large export, at most half a part for a small one.
    assert head_start(200_000, 2) == HELPER_HEAD_START
    assert head_start(20, 2) == 5 and head_start(0, 2) == 0


def test_parallel_export_is_byte_identical_to_one_process(db, settings, tmp_path):
    """Each helper process (a fresh interpreter: most of this file's time) is spent on what only helpers
    do: the middle and the last range (3 parts), a channel with both ends of a window, a topic. How each
    filter's window is cut into ranges is checked in the store (test_split_keys_...) for every filter."""
    topic = _seeded(db)
    both_ends = (T0 + timedelta(days=2), T0 + timedelta(days=5))
    cases = {
        "all3": (ExportFilters(), 3),
        "channel_window": (ExportFilters(channel_id=PRIVATE, since=both_ends[0], until=both_ends[1]), 2),
        "topic": (ExportFilters(topic_id=topic), 2),
        "empty": (ExportFilters(since=T0 + timedelta(days=900)), 2),
        # One document, three parts: the export runs in one process.
        "one": (
            ExportFilters(channel_id=PRIVATE, since=T0 + timedelta(days=5), until=T0 + timedelta(days=6)),
            3,
        ),
    }
    store = ExportStore(db)
    for name in ("all3", "channel_window"):  # every helper has documents to write
        filters, jobs = cases[name]
        window = (filters.channel_id, filters.since or FAR_PAST, filters.until or FAR_FUTURE)
        assert store.count_documents(*window) > jobs, name
    for name, (filters, jobs) in cases.items():
        one = export(db, tmp_path / f"{name}-1", filters, jobs=1, settings=settings)
        many = export(db, tmp_path / f"{name}-n", filters, jobs=jobs, settings=settings)
        assert _files(tmp_path / f"{name}-1") == _files(tmp_path / f"{name}-n"), name
        assert (one.message_entries, one.topic_entries) == (many.message_entries, many.topic_entries)
    assert not multiprocessing.active_children()


def test_the_cli_splits_and_writes_the_same_bytes(settings, db, tmp_path):
    _seeded(db)
    env = db_env(settings)
    export(db, tmp_path / "1", jobs=1)  # what `--jobs 1` writes (one process: tests/test_export.py)
    result = CliRunner().invoke(
        cli, ["export", "--out", str(tmp_path / "2"), "--jobs", "2", "--silent"], env=env
    )
    assert result.exit_code == 0, result.output
    assert _files(tmp_path / "1") == _files(tmp_path / "2")
    result = CliRunner().invoke(cli, ["export", "--out", str(tmp_path / "0"), "--jobs", "0"], env=env)
    assert result.exit_code == 2 and "--jobs" in result.output


def test_a_helper_that_fails_fails_the_export_and_leaves_nothing(db, settings, tmp_path):
    _seeded(db)
    out = tmp_path / "out"
    export(db, out, jobs=1)
    before = _files(out)
    # The helper opens its own connection from the settings: one to a database that is not there fails.
    if settings.db_type == "sqlite":
        broken = settings.model_copy(update={"db_sqlite_dir": tmp_path / "missing"})
    else:
        broken = settings.model_copy(update={"db_name": "tgp_no_such_database"})
    with pytest.raises(TgParserError) as failure:
        export(db, out, jobs=2, settings=broken)
    assert "\n" not in failure.value.one_line()
    assert _files(out) == before  # the previous export untouched, no temporary file left
    assert not multiprocessing.active_children()


def test_a_killed_helper_fails_the_export_and_leaves_nothing(db, settings, tmp_path):
    _seeded(db)
    out = tmp_path / "out"
    killed: list[int] = []

    def kill_helpers() -> None:
        # At the first entry of the exporting process's own range: the helper is still starting.
        for child in multiprocessing.active_children():
            if child.name.startswith("tgp-export-part") and child.pid not in killed:
                os.kill(child.pid, signal.SIGKILL)
                killed.append(child.pid)

    with pytest.raises(TgParserError, match="ended without finishing its part"):
        export(db, out, on_entry=kill_helpers, jobs=2, settings=settings)
    assert killed
    assert list(out.iterdir()) == []
    assert not multiprocessing.active_children()


def test_jobs_default_to_two_only_for_large_exports():
    assert auto_jobs(0) == 1 and auto_jobs(AUTO_MIN_DOCUMENTS - 1) == 1
    assert auto_jobs(AUTO_MIN_DOCUMENTS) == min(2, len(os.sched_getaffinity(0)))


def test_inside_a_transaction_the_export_runs_in_one_process(db, settings, tmp_path):
    _seeded(db)
    export(db, tmp_path / "one", jobs=1)
    with db.transaction():
        export(db, tmp_path / "tx", jobs=2, settings=settings)
        assert not multiprocessing.active_children()
    assert _files(tmp_path / "one") == _files(tmp_path / "tx")


def test_the_cli_counts_the_documents_once_for_its_bar_and_the_split(settings, db, tmp_path, monkeypatch):
    _seeded(db)
    counted: list[tuple] = []
    count = ExportStore.count_documents

    def counting(self, *window):
        counted.append(window)
        return count(self, *window)

    monkeypatch.setattr(ExportStore, "count_documents", counting)
    monkeypatch.setattr(cmd_export, "show_progress", lambda quiet: True)  # as at a terminal
    env = db_env(settings)
    for jobs in ("1", "2"):
        result = CliRunner().invoke(cli, ["export", "--out", str(tmp_path / jobs), "--jobs", jobs], env=env)
        assert result.exit_code == 0, result.output
    assert len(counted) == 2  # one count per export: the bar's, handed to the split
    assert _files(tmp_path / "1") == _files(tmp_path / "2")
