"""Bad input and contention give one clear line and the right exit code, never a traceback."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from click.testing import CliRunner
from conftest import sqlite_settings
from support.api_server import free_port
from support.cli import db_env

from tg_parser.cli.main import cli
from tg_parser.config import Settings
from tg_parser.errors import EXIT_CONFIG, EXIT_LOCKED, EXIT_USAGE


def run(settings: Settings, *args: str, **env: str):
    return CliRunner().invoke(cli, list(args), env={**db_env(settings), **env})


def one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


def test_explain_with_a_value_the_database_rejects(settings):
    result = run(
        settings, "sql", "explain", "processing_select_candidates", "-p", "limit=abc", "-p", "force=maybe"
    )
    if settings.db_type == "postgres":
        assert result.exit_code == EXIT_USAGE
        assert "rejected query 'processing_select_candidates'" in one_error_line(result.output)
    else:  # SQLite takes any value for a LIMIT at plan time: the plan is shown
        assert result.exit_code == 0, result.output


def test_unknown_numeric_channel_is_refused_not_silently_empty(settings, tmp_path):
    out = tmp_path / "out"
    result = run(settings, "export", "--out", str(out), "--channel", "987654321")
    assert result.exit_code == EXIT_USAGE
    assert "no source and no stored message for channel 987654321" in one_error_line(result.output)
    assert not out.exists()
    result = run(settings, "topicize", "--channel", "987654321")
    assert result.exit_code == EXIT_USAGE


def test_a_channel_id_beyond_bigint_is_one_clear_line_on_every_command(settings, tmp_path):
    """Ids no store can hold are refused before the database sees them (PostgreSQL would answer with an
    overflow, SQLite with an OverflowError), and nothing is written."""
    huge = str(2**63)
    for args in (
        ("sources", "add", huge),
        ("sources", "add", f"https://t.me/c/{huge}/5"),
        ("export", "--out", str(tmp_path / "out"), "--channel", huge),
        ("process", "--channel", f"-100{huge}"),
        ("topicize", "--channel", huge),
    ):
        result = run(settings, *args)
        assert result.exit_code == EXIT_USAGE, (args, result.output)
        assert "is not a valid channel id (too large)" in one_error_line(result.output), args
    listed = run(settings, "sources", "list", "--json")
    assert listed.exit_code == 0 and json.loads(listed.output) == [], listed.output
    assert not (tmp_path / "out").exists()
    assert run(settings, "sources", "add", str(2**63 - 1)).exit_code == 0  # the largest BIGINT is fine


def test_export_into_an_unwritable_place(settings, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run(settings, "export", "--out", str(blocker / "sub"))
    assert result.exit_code == 1
    assert "cannot create the export folder" in one_error_line(result.output)


def test_sqlite_held_by_another_writer_is_exit_4(sqlite_dir):
    settings = sqlite_settings(sqlite_dir)
    assert run(settings, "sources", "add", "@first_channel").exit_code == 0  # switches the files to WAL
    other = sqlite3.connect(sqlite_dir / "ingestion_state.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        result = run(settings, "sources", "add", "@second_channel", DB_SQLITE_BUSY_TIMEOUT="200")
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert result.exit_code == EXIT_LOCKED
    assert "locked by another process" in one_error_line(result.output)


def _migrate(sqlite_dir: Path, report: Path):
    # A target where nothing listens: the migration fails at once (exit 3) after its report is made.
    target = f"postgresql://tgp@127.0.0.1:{free_port()}/tgp"
    settings = sqlite_settings(sqlite_dir)
    return run(settings, "db", "migrate-to-postgres", "--to", target, "--dry-run", "--report", str(report))


def test_a_migration_report_that_cannot_be_written_is_refused_before_the_migration(sqlite_dir, tmp_path):
    for report, reason in (
        (tmp_path / "missing" / "r.json", "does not exist"),
        (Path(__file__) / "r.json", "is not a directory"),
    ):
        result = _migrate(sqlite_dir, report)
        assert result.exit_code == EXIT_USAGE, result.output
        assert f"its directory {report.parent} {reason}" in one_error_line(result.output)
        assert "SQLite in" not in result.output  # refused before anything was opened


def test_a_migration_report_that_fails_to_write_keeps_the_outcome(sqlite_dir, tmp_path):
    report = tmp_path / "r.json"
    report.symlink_to(tmp_path / "gone" / "r.json")  # passes the checks, then the write fails
    result = _migrate(sqlite_dir, report)
    assert result.exit_code == EXIT_CONFIG, result.output  # the migration's own status (unreachable)
    assert "dry-run: SQLite in" in result.output  # the outcome was shown first
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"Error: cannot write the report to {report}: No such file or directory")
    assert "Traceback" not in result.output
