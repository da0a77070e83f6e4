"""The migrator keeps other sessions from writing the target tables while it loads (SHARE ROW EXCLUSIVE,
NOWAIT): a session already writing one of them stops the run at once with one line, nothing written; a
session only reading them does not stand in the way."""

from __future__ import annotations

import psycopg
import pytest

from tests.test_transfer_roundtrip import options, populated, table_counts_pg  # noqa: F401 - a fixture
from tg_parser.db.connect import pg_target
from tg_parser.transfer import run_transfer

# Every test starts from a populated SQLite install and an empty target.
pytestmark = pytest.mark.usefixtures("populated")


def other_session(settings) -> psycopg.Connection:
    return psycopg.connect(**pg_target(settings).connect_kwargs())


@pytest.mark.slow
def test_a_session_writing_a_target_table_stops_the_load(sqlite_dir, pg_only_settings):
    writer = other_session(pg_only_settings)
    try:
        # What an application writing to the table holds until it commits.
        writer.execute("LOCK TABLE processing.work_leases IN ROW EXCLUSIVE MODE")
        report = run_transfer(options(sqlite_dir, pg_only_settings))
        assert report.status == "failed" and report.exit_code == 1, report.error
        error = report.error or ""
        assert "another session is writing the target tables" in error and "\n" not in error
        assert "stop the application" in error
        assert not report.committed
    finally:
        writer.rollback()
        writer.close()
    assert not any(table_counts_pg(pg_only_settings).values())
    report = run_transfer(options(sqlite_dir, pg_only_settings))  # the writer gone: it runs
    assert report.status == "ok", report.error


@pytest.mark.slow
def test_a_session_reading_the_target_does_not_stop_the_load(sqlite_dir, pg_only_settings):
    reader = other_session(pg_only_settings)
    try:
        assert reader.execute("SELECT count(*) FROM raw.raw_messages").fetchone() == (0,)  # still open
        report = run_transfer(options(sqlite_dir, pg_only_settings))
        assert report.status == "ok", report.error
    finally:
        reader.rollback()
        reader.close()
    assert table_counts_pg(pg_only_settings)["raw.raw_messages"] > 0
