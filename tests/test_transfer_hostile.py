"""Hostile values in the SQLite source: caught in preflight with table, key and column; or repaired."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from tests.conftest import sqlite_settings
from tests.test_transfer_roundtrip import _dsn, options, populate, table_counts_pg
from tg_parser.cli.main import cli
from tg_parser.db.connect import open_database, pg_target
from tg_parser.db.sqlite import STORE_FILES
from tg_parser.stores import RawStore
from tg_parser.transfer import run_transfer


def write(directory: Path, store: str, statement: str, *params: object) -> None:
    """A direct sqlite3 write, bypassing the application (as a hand edit or an old bug would)."""
    conn = sqlite3.connect(directory / STORE_FILES[store])
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute(statement, params)
    conn.commit()
    conn.close()


@pytest.fixture
def refs(sqlite_dir: Path) -> list[str]:
    return populate(sqlite_settings(sqlite_dir), messages=150)["refs"]


# (store, statement, params builder, expected table, key index into refs or literal key, column, problem text)
HOSTILE = [
    (
        "raw",
        "UPDATE raw_messages SET text = 'a' || char(0) || 'b' WHERE source_ref = ?",
        3,
        "raw.raw_messages",
        "text",
        "NUL character",
    ),
    (
        "raw",
        "UPDATE raw_messages SET text = CAST(x'41c328ff' AS TEXT) WHERE source_ref = ?",
        4,
        "raw.raw_messages",
        "text",
        "invalid UTF-8",
    ),
    (
        "raw",
        "UPDATE raw_messages SET views = 'many' WHERE source_ref = ?",
        5,
        "raw.raw_messages",
        "views",
        "text value 'many' in an integer",
    ),
    (
        "raw",
        "UPDATE raw_messages SET views = 1e20 WHERE source_ref = ?",
        6,
        "raw.raw_messages",
        "views",
        "beyond the range of bigint",
    ),
    (
        "raw",
        "UPDATE raw_messages SET payload_size = 3000000000 WHERE source_ref = ?",
        7,
        "raw.raw_messages",
        "payload_size",
        "beyond the range of integer",
    ),
    (
        "raw",
        "UPDATE raw_messages SET raw_payload = '{\"a\":' WHERE source_ref = ?",
        8,
        "raw.raw_messages",
        "raw_payload",
        "malformed JSON",
    ),
    (
        "raw",
        "UPDATE raw_messages SET raw_payload = '{\"a\":NaN}' WHERE source_ref = ?",
        9,
        "raw.raw_messages",
        "raw_payload",
        "NaN",
    ),
    (
        "raw",
        'UPDATE raw_messages SET raw_payload = \'{"a":"x\\u0000y"}\' WHERE source_ref = ?',
        10,
        "raw.raw_messages",
        "raw_payload",
        "\\u0000",
    ),
    (
        "raw",
        "UPDATE raw_messages SET media = '[\"\\ud800\"]' WHERE source_ref = ?",
        11,
        "raw.raw_messages",
        "media",
        "surrogate",
    ),
    (
        "raw",
        "UPDATE raw_messages SET date = '2025-01-02 03:04:05' WHERE source_ref = ?",
        12,
        "raw.raw_messages",
        "date",
        "malformed timestamp",
    ),
    (
        "raw",
        "UPDATE raw_messages SET date = '2025-02-30T00:00:00.000000Z' WHERE source_ref = ?",
        13,
        "raw.raw_messages",
        "date",
        "not a real date",
    ),
    (
        "raw",
        "UPDATE raw_messages SET edit_date = 1735787045 WHERE source_ref = ?",
        14,
        "raw.raw_messages",
        "edit_date",
        "malformed timestamp '1735787045'",
    ),  # TEXT affinity stored it as text
    (
        "raw",
        "UPDATE raw_messages SET payload_truncated = 2 WHERE source_ref = ?",
        15,
        "raw.raw_messages",
        "payload_truncated",
        "only 0 and 1",
    ),
    (
        "raw",
        "UPDATE raw_messages SET media_type = x'00ff' WHERE source_ref = ?",
        16,
        "raw.raw_messages",
        "media_type",
        "blob value",
    ),
    (
        "raw",
        "INSERT INTO raw_message_versions (source_ref, observed_at, text, raw_payload) VALUES ('tg:9:post:9', '2025-01-01T00:00:00.000000Z', '', '{}')",
        None,
        "raw.raw_message_versions",
        "(foreign key)",
        "missing from raw.raw_messages",
    ),
]


@pytest.mark.slow
# Batches of a few rows: the load looks at the scan's results after each, so it may stop at the first
# offender the scan reports (or fail on the value itself): the report is the same.
@pytest.mark.parametrize("batch_size", [500, 3])
def test_every_hostile_value_is_reported_and_nothing_is_written(
    refs, sqlite_dir, pg_only_settings, batch_size
):
    for store, statement, index, *_ in HOSTILE:
        if index is None:
            write(sqlite_dir, store, statement)
        else:
            write(sqlite_dir, store, statement, refs[index])
    report = run_transfer(options(sqlite_dir, pg_only_settings, batch_size=batch_size, workers=2))
    assert report.status == "offenders" and report.exit_code == 1, report.error
    assert not any(table_counts_pg(pg_only_settings).values())
    assert not report.committed and "nothing was written" in (report.error or "")
    listed = [(o.table, o.key, o.column, o.problem) for o in report.offenders]
    for _store, _statement, index, table, column, problem in HOSTILE:
        matches = [
            entry
            for entry in listed
            if entry[0] == table
            and entry[2] == column
            and problem in entry[3]
            and (index is None or entry[1] == {"source_ref": refs[index]})
        ]
        assert matches, f"{table}.{column} ({problem}) not reported: {listed}"
    assert report.offenders_total == len(HOSTILE)


def test_offenders_on_the_command_line(refs, sqlite_dir, pg_only_settings, tmp_path):
    write(sqlite_dir, "raw", "UPDATE raw_messages SET views = 'many' WHERE source_ref = ?", refs[5])
    result = CliRunner().invoke(
        cli,
        [
            "db",
            "migrate-to-postgres",
            "--to",
            _dsn(pg_only_settings),
            "--workers",
            "2",
            "--report",
            str(tmp_path / "r.json"),
        ],
        env={"DB_TYPE": "sqlite", "DB_SQLITE_DIR": str(sqlite_dir)},
    )
    assert result.exit_code == 1
    assert f"raw.raw_messages [source_ref='{refs[5]}'] views: text value 'many'" in result.output
    assert not any(table_counts_pg(pg_only_settings).values())


@pytest.mark.slow
def test_on_nul_strip_repairs_counts_and_verifies(refs, sqlite_dir, pg_only_settings):
    write(
        sqlite_dir,
        "raw",
        "UPDATE raw_messages SET text = 'a' || char(0) || 'b' || char(0) WHERE source_ref = ?",
        refs[3],
    )
    write(
        sqlite_dir,
        "raw",
        "UPDATE raw_messages SET source_id = 'chan' || char(0) || '1' WHERE source_ref = ?",
        refs[3],
    )
    write(
        sqlite_dir,
        "raw",
        'UPDATE raw_messages SET raw_payload = \'{"k\\u0000":"x\\u0000y","n":1.0}\' WHERE source_ref = ?',
        refs[4],
    )
    refused = run_transfer(options(sqlite_dir, pg_only_settings))
    assert refused.status == "offenders" and len(refused.offenders) == 3

    report = run_transfer(options(sqlite_dir, pg_only_settings, on_nul="strip", workers=2))
    assert report.status == "ok", report.error
    assert all(e.match for e in report.tables)
    assert report.repairs == {"raw.raw_messages": {"text": 1, "source_id": 1, "raw_payload": 1}}
    assert next(e for e in report.tables if e.table == "raw.raw_messages").repaired_cells == 3
    assert any("repaired" in note for note in report.notes)
    assert report.as_dict()["repaired_cells"] == 3

    db = open_database(pg_only_settings)
    try:
        raw = RawStore(db)
        assert raw.get(refs[3]).text == "ab"
        assert raw.get(refs[3]).source_id == "chan1"
        assert raw.get(refs[4]).raw_payload == {"k": "xy", "n": 1.0}
    finally:
        db.close()
    with psycopg.connect(**pg_target(pg_only_settings).connect_kwargs()) as conn:
        stored = conn.execute(
            "SELECT raw_payload::text FROM raw.raw_messages WHERE source_ref = %s", (refs[4],)
        )
        assert stored.fetchone()[0] == '{"k": "xy", "n": 1.0}'


@pytest.mark.slow
def test_the_first_offender_stops_the_load(refs, sqlite_dir, pg_only_settings, monkeypatch):
    """The scan runs beside the COPY; once it reports an offender the load stops at the next block,
    the transaction is rolled back and the scan still lists every offender."""
    from tg_parser.transfer import parallel, runner

    # 2 fits no boolean, but binary COPY would take it as true: only the scan can catch it.
    write(sqlite_dir, "raw", "UPDATE raw_messages SET payload_truncated = 2 WHERE source_ref = ?", refs[7])
    write(sqlite_dir, "raw", "UPDATE raw_messages SET views = 'x' WHERE source_ref = ?", refs[90])

    def poll_waiting(self):  # the scan answers before the next block goes out
        done = 0
        while self.in_flight:
            done += self._collect(None)
        return done

    stops = []

    class Stop(runner._Offenders):
        def __init__(self) -> None:
            stops.append(True)
            super().__init__()

    monkeypatch.setattr(parallel.Scan, "poll", poll_waiting)
    monkeypatch.setattr(runner, "_Offenders", Stop)
    report = run_transfer(options(sqlite_dir, pg_only_settings, batch_size=5, workers=2))
    assert stops, "the load did not stop at the scan's first offender"
    assert report.status == "offenders" and report.exit_code == 1 and not report.committed
    listed = {(o.key["source_ref"], o.column) for o in report.offenders}
    assert listed == {(refs[7], "payload_truncated"), (refs[90], "views")}
    assert not any(table_counts_pg(pg_only_settings).values())
