"""The first CLI commands (DESIGN.md §9) on both dialects: init, health, db upgrade/status/rollback/unlock,
sources add/list/pause/resume/remove, sql list/show/explain, version — and their bad-input paths.

Commands run through click's CliRunner with the environment an operator would set (DB_TYPE plus
DB_SQLITE_DIR or DB_HOST/DB_PORT/DB_USER/DB_NAME), against real SQLite files and the real PostgreSQL.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import sqlite3
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import click
import psycopg
import pytest
from click.testing import CliRunner, Result
from conftest import PG_HOST, PG_PORT, PG_USER, require_postgres
from psycopg import sql
from support.cli import db_env as env_for

from tg_parser import __version__
from tg_parser.cli.main import cli
from tg_parser.config import Settings
from tg_parser.db import migrations
from tg_parser.db.connect import open_database, pg_target
from tg_parser.db.locks import lock_key
from tg_parser.db.sqlite import STORE_FILES, store_path
from tg_parser.errors import EXIT_CONFIG, EXIT_LOCKED, EXIT_USAGE
from tg_parser.stores import IngestionStore

Invoke = Callable[..., Result]
STORES = ("ingestion", "raw", "processing")
TRICKY_ID = "a'b\"%c:d;e"
TRICKY_TITLE = "T'it\"le 100% :x; DROP TABLE sources;--"


def make_invoker(env: dict[str, str]) -> Invoke:
    def invoke(*args: str, input: str | None = None, **extra_env: str) -> Result:
        result = CliRunner().invoke(
            cli, list(args), env={**env, **extra_env}, input=input, prog_name="tg-parser"
        )
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError("command crashed:\n" + "".join(traceback.format_exception(result.exception)))
        assert "Traceback" not in result.output
        return result

    return invoke


def one_error_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory: no developer `.env`, and a stray ./data would show up here."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


@pytest.fixture
def run(settings: Settings) -> Invoke:
    """Invoke tg-parser against the migrated, empty install of this test's dialect."""
    return make_invoker(env_for(settings))


_fresh_numbers = itertools.count(1)


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Settings for a database nothing has been created in yet."""
    if request.param == "sqlite":
        yield {"DB_TYPE": "sqlite", "DB_SQLITE_DIR": str(tmp_path / "fresh" / "data")}
        return
    require_postgres()
    name = f"tgp_cli_fresh_{os.getpid()}_{next(_fresh_numbers)}"
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield {
            "DB_TYPE": "postgres",
            "DB_HOST": PG_HOST,
            "DB_PORT": str(PG_PORT),
            "DB_USER": PG_USER,
            "DB_NAME": name,
            "DB_POOL_MIN_SIZE": "1",
            "DB_POOL_MAX_SIZE": "3",
        }
    finally:
        with psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True
        ) as c:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- init and health --------------------------------------------------------------------------------


@pytest.mark.slow
def test_init_then_health_on_a_fresh_database(fresh_env: dict[str, str]) -> None:
    run = make_invoker(fresh_env)
    dialect = fresh_env["DB_TYPE"]

    before = run("sources", "list")
    assert before.exit_code == EXIT_CONFIG
    assert "run 'tg-parser init'" in one_error_line(before)
    unhealthy = run("health")
    assert unhealthy.exit_code == 1 and "unhealthy" in unhealthy.stdout

    first = run("init")
    assert first.exit_code == 0, first.output
    for store in STORES:
        want = migrations.expected_ids(dialect, store)
        assert f"{store:<10} applied {', '.join(want)}" in first.stdout
    assert "Ready:" in first.stdout
    if dialect == "sqlite":
        data = Path(fresh_env["DB_SQLITE_DIR"])
        assert sorted(p.name for p in data.glob("*.sqlite")) == sorted(STORE_FILES.values())

    again = run("init", "--json")
    assert again.exit_code == 0
    assert json.loads(again.stdout) == {"database": dialect, "applied": {s: [] for s in STORES}}

    health = run("health")
    assert health.exit_code == 0, health.output
    assert health.stdout.strip().endswith("healthy")
    for store in STORES:
        assert f"{store:<10} ok    schema {migrations.expected_ids(dialect, store)[-1]}" in health.stdout

    report = json.loads(run("health", "--json").stdout)
    assert report["ok"] is True and report["database"] == dialect and report["version"] == __version__
    for store in STORES:
        entry = report["stores"][store]
        assert entry == {
            "current": migrations.expected_ids(dialect, store)[-1],
            "pending": [],
            "reachable": True,
            "ok": True,
        }
    if dialect == "postgres":
        assert report["pool"]["pool_max"] == 3  # DB_POOL_MAX_SIZE reached the pool
        assert f"{PG_HOST}:{PG_PORT}/{fresh_env['DB_NAME']}" in report["where"]
        assert "pool       size" in health.stdout
    else:
        assert set(report["files"]) == set(STORES)
        assert all(entry["bytes"] > 0 for entry in report["files"].values())


def test_sqlite_with_no_configuration_at_all_uses_data_in_the_working_directory(_cwd: Path) -> None:
    run = make_invoker({})
    assert run("init").exit_code == 0
    assert sorted(p.name for p in (_cwd / "data").iterdir() if p.suffix == ".sqlite") == sorted(
        STORE_FILES.values()
    )
    health = run("health")
    assert health.exit_code == 0 and "SQLite in data" in health.stdout


# --- read-only commands on a store that was never created ---------------------------------------------


def _created_stores(env: dict[str, str]) -> list[str]:
    """What exists of the stores: SQLite files (and anything else) under DB_SQLITE_DIR, or the stores'
    PostgreSQL schemas; read without tg-parser, so the check cannot create what it looks for."""
    if env["DB_TYPE"] == "sqlite":
        data = Path(env["DB_SQLITE_DIR"])
        return sorted(p.name for p in data.iterdir()) if data.exists() else []
    with psycopg.connect(
        host=env["DB_HOST"], port=int(env["DB_PORT"]), user=env["DB_USER"], dbname=env["DB_NAME"]
    ) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s) ORDER BY 1", (list(STORES),)
        ).fetchall()
    return [row[0] for row in rows]


# Commands that only read the stores, and their exit code on an install nothing was created in.
READ_ONLY_COMMANDS: list[tuple[list[str], int]] = [
    (["db", "status"], 1),
    (["db", "status", "--json"], 1),
    (["health"], 1),
    (["health", "--json"], 1),
    (["sources", "list"], EXIT_CONFIG),
    (["runs", "list"], EXIT_CONFIG),
    (["runs", "show", "run-1"], EXIT_CONFIG),
    (["sql", "explain", "raw_stream_channel"], EXIT_CONFIG),
    (["export", "--out", "kb"], EXIT_CONFIG),
    (["api-keys", "list"], EXIT_CONFIG),
    (["db", "check-orphans"], EXIT_CONFIG),
    (["db", "prune", "--dry-run"], EXIT_CONFIG),
    (["db", "checksum"], EXIT_CONFIG),
    # Not reads, but with no store there is nothing to unlock or roll back: refused, nothing created.
    (["db", "unlock", "--store", "raw"], EXIT_CONFIG),
    (["db", "rollback", "--store", "raw"], EXIT_CONFIG),
    (["db", "rollback", "--store", "raw", "--yes"], EXIT_CONFIG),
]


@pytest.mark.slow
def test_read_only_commands_create_no_store_on_a_fresh_database(fresh_env: dict[str, str]) -> None:
    run = make_invoker(fresh_env)
    dialect = fresh_env["DB_TYPE"]
    for args, code in READ_ONLY_COMMANDS:
        result = run(*args)
        assert result.exit_code == code, (args, result.output)
        assert _created_stores(fresh_env) == [], f"{args} created {_created_stores(fresh_env)}"
        if code == EXIT_CONFIG:
            line = one_error_line(result)
            if dialect == "sqlite":
                assert STORE_FILES["raw"] in line, (args, line)  # names the missing file
            else:
                assert "no schema yet" in line, (args, line)
            if args[:2] != ["db", "checksum"] or dialect == "postgres":
                assert "not initialised" in line and "run 'tg-parser init'" in line, (args, line)
            assert "behind" not in line
        elif args[0] == "health" and "--json" not in args:
            assert "not initialised" in result.stdout and "tg-parser init" in result.stdout

    table = run("db", "status").stdout.splitlines()
    for store in STORES:
        (line,) = [row for row in table if row.startswith(f"{store} ")]
        assert line.split(None, 1)[1].startswith("(not created)"), line
    status = run("db", "status", "--json")
    assert status.exit_code == 1
    assert json.loads(status.stdout) == [
        {
            "store": store,
            "applied": [],
            "pending": migrations.expected_ids(dialect, store),
            "unknown": [],
            "lock": None,
            "unknown_compatibility": {},
            "invalid_indexes": [],
            "created": False,
            "current": None,
            "up_to_date": False,
        }
        for store in STORES
    ]

    assert run("init").exit_code == 0
    after = json.loads(run("db", "status", "--json").stdout)
    assert all(s["created"] and s["up_to_date"] for s in after)
    assert run("sources", "list").exit_code == 0


def _remove_store(settings: Settings, store: str) -> None:
    if settings.db_type == "sqlite":
        store_path(settings.db_sqlite_dir, store).unlink()
        return
    with psycopg.connect(**pg_target(settings).connect_kwargs(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(store)))


def test_db_status_reports_a_missing_store_as_not_created_and_leaves_it_missing(
    run: Invoke, settings: Settings
) -> None:
    env = env_for(settings)
    _remove_store(settings, "raw")
    present = [STORE_FILES[s] for s in ("ingestion", "processing")] if settings.db_type == "sqlite" else None
    left = _created_stores(env)

    status = run("db", "status", "--json")
    assert status.exit_code == 1
    rows = {row["store"]: row for row in json.loads(status.stdout)}
    assert rows["raw"]["created"] is False and rows["raw"]["current"] is None
    assert rows["raw"]["pending"] == migrations.expected_ids(settings.db_type, "raw")
    assert all(rows[s]["created"] and rows[s]["up_to_date"] for s in ("ingestion", "processing"))
    only_raw = run("db", "status", "--store", "raw")
    assert only_raw.exit_code == 1 and "(not created)" in only_raw.stdout
    assert "ingestion" not in only_raw.stdout

    health = run("health")
    assert health.exit_code == 1 and "not initialised" in health.stdout
    for args in (
        ["sources", "list"],
        ["db", "unlock", "--store", "raw"],
        ["db", "rollback", "--store", "raw"],
    ):
        refused = run(*args)
        assert refused.exit_code == EXIT_CONFIG, (args, refused.output)
        line = one_error_line(refused)
        assert "not initialised" in line and "tg-parser init" in line and "behind" not in line
    assert _created_stores(env) == left  # nothing read above created the store
    if present is not None:
        assert [name for name in left if name.endswith(".sqlite")] == sorted(present)
    else:
        assert left == ["ingestion", "processing"]

    upgraded = run("db", "upgrade", "--store", "raw")  # the hint works
    assert upgraded.exit_code == 0, upgraded.output
    assert run("db", "status").exit_code == 0


def test_health_exits_1_when_a_store_is_behind(run: Invoke, settings: Settings) -> None:
    latest = migrations.expected_ids(settings.db_type, "raw")[-1]
    rolled = run("db", "rollback", "--store", "raw", "--yes")
    assert rolled.exit_code == 0, rolled.output
    assert rolled.stdout.strip() == f"raw: rolled back {latest}"

    health = run("health")
    assert health.exit_code == 1
    lines = {line.split()[0]: line for line in health.stdout.splitlines() if line.startswith("  ")}
    assert "FAIL" in lines["raw"] and "1 migration(s) pending — run 'tg-parser db upgrade'" in lines["raw"]
    assert " ok " in lines["ingestion"] and " ok " in lines["processing"]
    assert health.stdout.strip().endswith("unhealthy")

    report = json.loads(run("health", "--json").stdout)
    assert report["ok"] is False
    assert report["stores"]["raw"]["pending"] == [latest] and report["stores"]["raw"]["ok"] is False
    assert report["stores"]["ingestion"]["ok"] is True

    # Any command that opens the stores refuses a schema that is behind, with the fix.
    refused = run("sources", "list")
    assert refused.exit_code == EXIT_CONFIG
    line = one_error_line(refused)
    assert "store 'raw'" in line and "behind" in line and line.endswith("run 'tg-parser db upgrade'")


@pytest.mark.slow
def test_db_status_rollback_upgrade_round_trip(run: Invoke, settings: Settings) -> None:
    raw_ids = migrations.expected_ids(settings.db_type, "raw")
    status = run("db", "status", "--json")
    assert status.exit_code == 0
    rows = json.loads(status.stdout)
    assert [r["store"] for r in rows] == list(STORES)
    assert all(r["up_to_date"] and r["pending"] == [] and r["lock"] is None for r in rows)
    assert {r["store"]: r["current"] for r in rows} == {
        s: migrations.expected_ids(settings.db_type, s)[-1] for s in STORES
    }

    declined = run("db", "rollback", "--store", "raw", input="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.output
    assert f"Roll back {raw_ids[-1]} of store 'raw'?" in declined.output  # what would go, by name
    assert run("db", "status").exit_code == 0  # nothing was rolled back
    # More steps than applied: the prompt names the ones there are.
    declined = run("db", "rollback", "--store", "raw", "--steps", "99", input="n\n")
    assert f"Roll back {', '.join(reversed(raw_ids))} of store 'raw'?" in declined.output

    everything = run("db", "rollback", "--store", "raw", "--steps", str(len(raw_ids)), "--yes")
    assert everything.exit_code == 0
    assert everything.stdout.strip() == f"raw: rolled back {', '.join(reversed(raw_ids))}"
    pending = run("db", "status", "--json")
    assert pending.exit_code == 1
    by_store = {r["store"]: r for r in json.loads(pending.stdout)}
    assert by_store["raw"]["pending"] == raw_ids and by_store["raw"]["current"] is None
    assert by_store["ingestion"]["up_to_date"] and by_store["processing"]["up_to_date"]
    table = run("db", "status")
    assert table.exit_code == 1
    raw_row = next(line for line in table.stdout.splitlines() if line.startswith("raw "))
    assert "(none)" in raw_row and raw_ids[0] in raw_row

    nothing = run("db", "rollback", "--store", "raw", "--yes")
    assert nothing.stdout.strip() == "raw: rolled back nothing (no migration applied)"
    asked = run("db", "rollback", "--store", "raw")  # nothing to confirm: no prompt, the same line
    assert asked.exit_code == 0 and asked.stdout.strip() == nothing.stdout.strip()

    upgraded = run("db", "upgrade", "--json")
    assert upgraded.exit_code == 0
    assert json.loads(upgraded.stdout) == {"ingestion": [], "raw": raw_ids, "processing": []}
    assert run("db", "status", "--json").exit_code == 0
    assert run("health").exit_code == 0
    # The store works again after the round trip.
    assert run("sources", "add", "@after_round_trip").exit_code == 0

    only = run("db", "upgrade", "--store", "processing")
    assert only.stdout.strip() == "processing up to date"


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _insert_lock(settings: Settings, store: str, pid: int, db_pid: int | None = None) -> None:
    """Leave a migration lock row behind, as a process of this host killed mid-upgrade would (on PostgreSQL
    its database session, `db_pid`, is gone with it: nobody holds the store's advisory lock)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    host = socket.gethostname()
    if settings.db_type == "sqlite":
        path = settings.db_sqlite_dir / STORE_FILES[store]
        with sqlite3.connect(path) as conn:
            conn.execute(
                "INSERT INTO yoyo_lock (locked, ctime, pid, host) VALUES (1, ?, ?, ?)",
                (now.isoformat(" "), pid, host),
            )
        return
    with psycopg.connect(
        host=settings.db_host, port=settings.db_port, user=settings.db_user, dbname=settings.db_name
    ) as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.yoyo_lock (locked, ctime, pid, host, db_pid) VALUES (1, %s, %s, %s, %s)"
            ).format(sql.Identifier(store)),
            (now, pid, host, db_pid or pid),
        )


def test_stale_lock_is_reported_with_the_fix_and_unlock_removes_it(run: Invoke, settings: Settings) -> None:
    pid = _dead_pid()
    _insert_lock(settings, "raw", pid)

    rows = {r["store"]: r for r in json.loads(run("db", "status", "--json").stdout)}
    assert rows["raw"]["lock"]["pid"] == pid and rows["raw"]["lock"]["stale"] is True
    assert rows["ingestion"]["lock"] is None
    assert f"pid {pid} (stale)" in run("db", "status").stdout

    blocked = run("db", "upgrade")
    assert blocked.exit_code == EXIT_LOCKED
    line = one_error_line(blocked)
    assert "stale migration lock" in line and "tg-parser db unlock --store raw" in line

    unlocked = run("db", "unlock", "--store", "raw")
    assert unlocked.exit_code == 0 and unlocked.stdout.strip() == f"raw: removed lock of pid {pid}"
    assert run("db", "unlock", "--store", "raw").stdout.strip() == "raw: no lock was held"
    assert run("db", "upgrade").exit_code == 0


def test_a_live_lock_is_not_called_stale(run: Invoke, settings: Settings) -> None:
    with contextlib.ExitStack() as stack:
        db_pid = None
        if settings.db_type == "postgres":  # the migrating session is alive: it holds the advisory lock
            conn = stack.enter_context(
                psycopg.connect(**pg_target(settings).connect_kwargs(), autocommit=True)
            )
            conn.execute("SELECT pg_advisory_lock(%s)", (lock_key("migrate:processing"),))
            db_pid = conn.info.backend_pid
        _insert_lock(settings, "processing", os.getpid(), db_pid)  # this process is alive
        blocked = run("db", "rollback", "--store", "processing", "--yes")
        assert blocked.exit_code == EXIT_LOCKED
        line = one_error_line(blocked)
        assert "being migrated by another process" in line and "stale" not in line
        unasked = run("db", "rollback", "--store", "processing", input="y\n")  # refused before the prompt
        assert unasked.exit_code == EXIT_LOCKED and "Roll back" not in unasked.output
        assert one_error_line(unasked) == line
        refused = run("db", "unlock", "--store", "processing")  # it may still be running: not without --force
        assert refused.exit_code == EXIT_LOCKED and "--force" in one_error_line(refused)
    assert run("db", "unlock", "--store", "processing", "--force").exit_code == 0


# --- sources ----------------------------------------------------------------------------------------


def _sources(run: Invoke) -> dict[str, dict]:
    result = run("sources", "list", "--json")
    assert result.exit_code == 0, result.output
    return {s["source_id"]: s for s in json.loads(result.stdout)}


@pytest.mark.parametrize(
    ("channel", "source_id", "channel_id", "username"),
    [
        ("1234567890", "1234567890", 1234567890, None),
        ("-1001234567891", "1234567891", 1234567891, None),  # Bot-API form; not taken for an option
        ("@SomeChannel", "somechannel", None, "SomeChannel"),
        ("https://t.me/another_chan/55", "another_chan", None, "another_chan"),
        ("t.me/c/1234567892/10", "1234567892", 1234567892, None),
    ],
)
def test_sources_add_accepts_ids_usernames_and_links(
    run: Invoke, channel: str, source_id: str, channel_id: int | None, username: str | None
) -> None:
    result = run("sources", "add", channel, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["created"] is True
    stored = _sources(run)[source_id]
    assert (stored["channel_id"], stored["username"]) == (channel_id, username)
    assert (stored["status"], stored["kind"], stored["last_post_id"]) == ("active", "telegram", 0)
    assert payload["source"]["source_id"] == source_id


def test_sources_add_with_comments_and_window(run: Invoke, settings: Settings) -> None:
    result = run(
        "sources",
        "add",
        "@windowed",
        "--comments",
        "--since",
        "2025-01-01",
        "--until",
        "2025-06-30T12:30:00+02:00",
    )
    assert result.exit_code == 0 and result.stdout.strip() == "Added source 'windowed' (windowed)"
    listed = _sources(run)["windowed"]
    assert listed["include_comments"] is True
    assert listed["since_date"].startswith("2025-01-01T00:00:00")
    db = open_database(settings)
    try:
        source = IngestionStore(db).get_source("windowed")
    finally:
        db.close()
    assert source is not None
    assert source.since_date == datetime(2025, 1, 1, tzinfo=UTC)
    assert source.until_date == datetime(2025, 6, 30, 10, 30, tzinfo=UTC)  # converted to UTC


def test_re_adding_a_source_keeps_its_cursor_and_status(run: Invoke, settings: Settings) -> None:
    assert run("sources", "add", "@keeper", "--title", "First title").exit_code == 0
    db = open_database(settings)
    try:
        store = IngestionStore(db)
        store.advance_post_cursor("keeper", 500)
        store.record_failure("keeper", "boom", permanent=False)
        store.set_status("keeper", "paused")
    finally:
        db.close()

    again = run("sources", "add", "https://t.me/keeper", "--comments", "--since", "2025-02-01", "--json")
    assert again.exit_code == 0, again.output
    payload = json.loads(again.stdout)
    assert payload["created"] is False
    kept = _sources(run)["keeper"]
    assert kept["last_post_id"] == 500 and kept["fail_count"] == 1 and kept["status"] == "paused"
    assert kept["title"] == "First title"
    assert kept["include_comments"] is True and kept["since_date"].startswith("2025-02-01")
    assert run("sources", "add", "@keeper").stdout.strip() == "Updated source 'keeper' (keeper)"
    assert _sources(run)["keeper"]["last_post_id"] == 500


def test_sources_list_json_and_table(run: Invoke) -> None:
    empty = run("sources", "list")
    assert empty.stdout.strip() == "No sources yet. Add one with: tg-parser sources add @channel"
    assert json.loads(run("sources", "list", "--json").stdout) == []
    for name in ("@zeta_chan", "@alpha_chan", "1234500000"):
        assert run("sources", "add", name).exit_code == 0
    assert run("sources", "pause", "zeta_chan").exit_code == 0
    listed = json.loads(run("sources", "list", "--json").stdout)
    assert [s["source_id"] for s in listed] == ["1234500000", "alpha_chan", "zeta_chan"]
    assert set(listed[0]) >= {"source_id", "channel_id", "username", "status", "last_post_id", "created_at"}
    assert listed[0]["created_at"].endswith("Z")
    paused = json.loads(run("sources", "list", "--status", "paused", "--json").stdout)
    assert [s["source_id"] for s in paused] == ["zeta_chan"]
    table = run("sources", "list").stdout.splitlines()
    assert table[0].split() == [
        "source_id",
        "channel",
        "kind",
        "status",
        "comments",
        "last_post_id",
        "last_success",
        "fails",
    ]
    assert any(line.startswith("alpha_chan") and "@alpha_chan" in line for line in table)


def test_pause_resume_remove(run: Invoke) -> None:
    assert run("sources", "add", "@lifecycle").exit_code == 0
    assert run("sources", "pause", "lifecycle").stdout.strip() == "lifecycle: paused"
    assert _sources(run)["lifecycle"]["status"] == "paused"
    assert run("sources", "resume", "lifecycle").stdout.strip() == "lifecycle: active"
    assert _sources(run)["lifecycle"]["status"] == "active"

    declined = run("sources", "remove", "lifecycle", input="n\n")
    assert declined.exit_code == 1 and "lifecycle" in _sources(run)
    confirmed = run("sources", "remove", "lifecycle", input="y\n")
    assert confirmed.exit_code == 0 and "Removed lifecycle" in confirmed.stdout
    assert "lifecycle" not in _sources(run)


# `remove` without --yes too: an unknown id is refused before the confirmation is asked for.
@pytest.mark.parametrize("action", [["pause"], ["resume"], ["remove", "--yes"], ["remove"]])
def test_unknown_source_id_is_one_line_and_exit_2(run: Invoke, action: list[str]) -> None:
    result = run("sources", *action, "no-such-source")
    assert result.exit_code == EXIT_USAGE
    assert one_error_line(result) == "Error: no source 'no-such-source' — see 'tg-parser sources list'"
    assert result.stdout == ""


def test_source_id_and_title_with_quotes_percent_colon_semicolon_round_trip(
    run: Invoke, settings: Settings
) -> None:
    odd_ids = [TRICKY_ID, ":source_id %(title)s %s ?;--", "-- not a comment */ /*"]
    for number, source_id in enumerate(odd_ids):
        result = run("sources", "add", f"@tricky_chan{number}", "--id", source_id, "--title", TRICKY_TITLE)
        assert result.exit_code == 0, result.output
    listed = _sources(run)
    for source_id in odd_ids:
        assert listed[source_id]["title"] == TRICKY_TITLE
    assert len(listed) == len(odd_ids)  # nothing else appeared

    db = open_database(settings)
    try:
        assert IngestionStore(db).get_source(TRICKY_ID).title == TRICKY_TITLE  # type: ignore[union-attr]
    finally:
        db.close()
    assert run("sources", "pause", TRICKY_ID).stdout.strip() == f"{TRICKY_ID}: paused"
    assert _sources(run)[TRICKY_ID]["status"] == "paused"
    assert any(TRICKY_ID in line for line in run("sources", "list").stdout.splitlines())
    assert run("sources", "remove", TRICKY_ID, "--yes").exit_code == 0
    assert set(_sources(run)) == set(odd_ids) - {TRICKY_ID}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["https://t.me/+AbCdEf123"], "invite link"),
        (["https://t.me/joinchat/AbCdEf123"], "invite link"),
        (["@ab"], "not a channel username"),
        (["-12345"], "not a channel id"),
        (["@fine_name", "--since", "2025-03-01", "--until", "2025-01-01"], "--since is after --until"),
        (["@fine_name", "--id", "  "], "--id is empty"),
    ],
)
def test_sources_add_bad_input(run: Invoke, args: list[str], fragment: str) -> None:
    result = run("sources", "add", *args)
    assert result.exit_code == EXIT_USAGE
    assert fragment in one_error_line(result)
    assert _sources(run) == {}  # never partial data


def test_sources_add_bad_date_is_a_usage_error(run: Invoke) -> None:
    result = run("sources", "add", "@fine_name", "--since", "yesterday")
    assert result.exit_code == EXIT_USAGE and "is not a date" in result.stderr


# --- sql --------------------------------------------------------------------------------------------


def test_sql_list_json(run: Invoke, settings: Settings) -> None:
    result = run("sql", "list", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    by_name = {r["name"]: r for r in rows}
    assert len(by_name) == len(rows)  # names are unique
    assert {r["store"] for r in rows} == set(STORES)
    assert by_name["sources_get"]["params"] == "source_id"
    assert by_name["sources_get"]["origin"] == "portable"
    assert by_name["raw_latest_observations"]["origin"] == settings.db_type  # the dialect's variant
    assert all(r["summary"] and Path(r["file"]).is_file() and r["line"] >= 1 for r in rows)
    only_raw = json.loads(run("sql", "list", "--store", "raw", "--json").stdout)
    assert only_raw and {r["store"] for r in only_raw} == {"raw"}
    table = run("sql", "list").stdout.splitlines()
    assert table[0].split() == ["name", "store", "origin", "summary"]


def test_sql_show(run: Invoke, settings: Settings) -> None:
    shown = run("sql", "show", "sources_get")
    assert shown.exit_code == 0
    lines = shown.stdout.splitlines()
    assert lines[0] == "-- name: sources_get"
    assert "-- parameters: :source_id" in lines
    assert any(line.startswith("-- store: ingestion; origin: portable; file: ") for line in lines)
    assert lines[-1] == "SELECT * FROM ingestion.sources WHERE source_id = :source_id;"

    variant = run("sql", "show", "raw_latest_observations").stdout
    assert ("jsonb_array_elements_text" in variant) == (settings.db_type == "postgres")
    assert ("json_each" in variant) == (settings.db_type == "sqlite")


def test_sql_show_unknown_name_lists_close_names(run: Invoke) -> None:
    result = run("sql", "show", "sources_gett")
    assert result.exit_code == EXIT_USAGE
    line = one_error_line(result)
    assert "unknown query 'sources_gett'" in line and "did you mean:" in line and "sources_get" in line
    assert line.endswith("list the names with 'tg-parser sql list'")


def test_sql_explain_on_the_configured_database(run: Invoke, settings: Settings) -> None:
    plan = run("sql", "explain", "sources_get", "-p", "source_id=x")
    assert plan.exit_code == 0, plan.output
    if settings.db_type == "sqlite":
        assert "sources" in plan.stdout and "USING INDEX" in plan.stdout  # the primary key serves it
    else:
        assert "sources_pkey" in plan.stdout or "Seq Scan on sources" in plan.stdout
        assert "cost=" in plan.stdout

    # The example the command's help gives, and a JSON-array parameter, run on both dialects.
    candidates = run("sql", "explain", "processing_select_candidates", "-p", "limit=100", "-p", "force=false")
    assert candidates.exit_code == 0, candidates.output
    assert "raw_messages" in candidates.stdout
    lookup = run("sql", "explain", "raw_latest_observations", "-p", 'refs=["tg:1:post:1","tg:1:post:2"]')
    assert lookup.exit_code == 0, lookup.output
    assert ("json_each" if settings.db_type == "sqlite" else "jsonb_array_elements_text") in lookup.stdout


def test_sql_explain_without_parameters_uses_the_example(run: Invoke, settings: Settings) -> None:
    # raw_count_messages' example names a channel: the plan shows the index search for it.
    plan = run("sql", "explain", "raw_count_messages")
    assert plan.exit_code == 0, plan.output
    assert "raw_messages_channel_date_idx" in plan.stdout
    if settings.db_type == "postgres":
        assert "1500000001" in plan.stdout  # the example's value, bound
    # -p given: the example is not used (a parameter not given is NULL: every channel).
    given = run("sql", "explain", "raw_count_messages", "-p", "message_type=post")
    assert given.exit_code == 0, given.output
    assert "1500000001" not in given.stdout


def test_sql_explain_bad_input(run: Invoke) -> None:
    unknown_param = run("sql", "explain", "sources_get", "-p", "sourceid=x")
    assert unknown_param.exit_code == EXIT_USAGE
    assert one_error_line(unknown_param) == (
        "Error: query 'sources_get' has no parameter sourceid — its parameters are: source_id"
    )
    unknown_query = run("sql", "explain", "no_such_query")
    assert unknown_query.exit_code == EXIT_USAGE and "unknown query 'no_such_query'" in one_error_line(
        unknown_query
    )
    not_key_value = run("sql", "explain", "sources_get", "-p", "source_id")
    assert not_key_value.exit_code == EXIT_USAGE and "is not KEY=VALUE" in not_key_value.stderr


def test_operator_override_from_tg_parser_sql_dir(run: Invoke, settings: Settings, tmp_path: Path) -> None:
    """The procedure docs/SQL.md gives a DBA: copy a query into TG_PARSER_SQL_DIR and change it."""
    overrides = tmp_path / "sql-overrides"
    (overrides / settings.db_type).mkdir(parents=True)
    (overrides / "sources.sql").write_text(
        "-- name: sources_list\n-- Newest first (site override).\n"
        "SELECT * FROM ingestion.sources ORDER BY source_id DESC;\n",
        encoding="utf-8",
    )
    other = "postgres" if settings.db_type == "sqlite" else "sqlite"
    (overrides / other).mkdir()
    (overrides / other / "broken.sql").write_text(
        "-- name: sources_list\nNOT SQL AT ALL;\n", encoding="utf-8"
    )

    env = {"TG_PARSER_SQL_DIR": str(overrides)}
    shown = run("sql", "show", "sources_list", **env)
    assert "-- Newest first (site override)." in shown.stdout
    assert "origin: override" in shown.stdout
    listed = {r["name"]: r for r in json.loads(run("sql", "list", "--json", **env).stdout)}
    assert listed["sources_list"]["origin"] == "override" and listed["sources_get"]["origin"] == "portable"
    for name in ("@aaa_chan", "@zzz_chan"):
        run("sources", "add", name)
    assert [s["source_id"] for s in json.loads(run("sources", "list", "--json", **env).stdout)] == [
        "zzz_chan",
        "aaa_chan",
    ]
    assert run("sql", "explain", "sources_list", **env).exit_code == 0

    (overrides / "typo.sql").write_text("-- name: sources_lisst\nSELECT 1;\n", encoding="utf-8")
    typo = run("sql", "list", **env)
    assert typo.exit_code == EXIT_CONFIG
    assert "unknown query 'sources_lisst'" in one_error_line(typo) and "sources_list" in typo.stderr


# --- connection failures ----------------------------------------------------------------------------


def test_unreachable_database_is_one_line_naming_host_and_port() -> None:
    port = closed_port()
    run = make_invoker(
        {
            "DB_TYPE": "postgres",
            "DB_HOST": "127.0.0.1",
            "DB_PORT": str(port),
            "DB_USER": "someone",
            "DB_PASSWORD": "Sekr3t-pw",
            "DB_CONNECT_TIMEOUT": "3",
        }
    )
    # `process` too: a database unreachable from the start is configuration (3); one lost mid-run is 1
    # (tests/test_pg_restart.py)
    for args in (
        ["sources", "list"],
        ["db", "status"],
        ["init"],
        ["sql", "explain", "sources_get"],
        ["process"],
    ):
        result = run(*args)
        assert result.exit_code == EXIT_CONFIG, (args, result.output)
        line = one_error_line(result)
        assert f"127.0.0.1:{port}" in line and "cannot connect to PostgreSQL" in line
        assert "Sekr3t-pw" not in result.output
    health = run("health")
    assert health.exit_code == 1 and f"127.0.0.1:{port}" in health.stdout
    assert "Sekr3t-pw" not in health.output
    report = json.loads(run("health", "--json").stdout)
    assert report["ok"] is False and f"127.0.0.1:{port}" in report["error"]


@pytest.mark.postgres
def test_missing_postgres_database_is_one_line() -> None:
    require_postgres()
    run = make_invoker(
        {
            "DB_TYPE": "postgres",
            "DB_HOST": PG_HOST,
            "DB_PORT": str(PG_PORT),
            "DB_USER": PG_USER,
            "DB_NAME": "tgp_no_such_database_here",
        }
    )
    result = run("sources", "list")
    assert result.exit_code == EXIT_CONFIG
    line = one_error_line(result)
    assert f"{PG_HOST}:{PG_PORT}/tgp_no_such_database_here" in line and "does not exist" in line


# --- the command line itself ------------------------------------------------------------------------


@pytest.mark.slow
def test_python_dash_m_help_and_version(_cwd: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tg_parser", "--help"], capture_output=True, text=True, timeout=60, cwd=_cwd
    )
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("Usage: tg-parser")
    listed = {line.split()[0] for line in proc.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert {"init", "health", "db", "sources", "sql", "version"} <= listed
    version = subprocess.run(
        [sys.executable, "-m", "tg_parser", "version"], capture_output=True, text=True, timeout=60, cwd=_cwd
    )
    assert version.stdout.strip() == f"tg-parser {__version__}"
    assert not (_cwd / "data").exists()  # neither touched the database


def test_version_flag_and_every_help_page(_cwd: Path) -> None:
    run = make_invoker({})
    assert run("--version").stdout.strip() == f"tg-parser {__version__}"

    def walk(command: click.Command, path: list[str]) -> Iterator[list[str]]:
        yield path
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from walk(sub, [*path, name])

    pages = list(walk(cli, []))
    assert ["db", "rollback"] in pages and ["sources", "add"] in pages and ["sql", "explain"] in pages
    for path in pages:
        result = run(*path, "--help")
        assert result.exit_code == 0, (path, result.output)
        assert result.stdout.startswith(f"Usage: tg-parser {' '.join(path)}".rstrip())
    assert not (_cwd / "data").exists()
