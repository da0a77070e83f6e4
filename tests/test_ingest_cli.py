"""`tg-parser ingest`, `telegram login|status` and `sources add` through the CLI, on both dialects.

Telegram is the fake of tests/support/fake_telegram.py plugged in as the client factory; settings come
from the environment exactly as an operator (or cron) would set them.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from support.cli import db_env
from support.fake_telegram import FakeTelegram
from telethon import errors as tg_errors
from telethon.crypto import AuthKey
from telethon.sessions import StringSession
from telethon.tl import functions

from tg_parser.cli.main import cli
from tg_parser.config import Settings
from tg_parser.db.connect import open_database
from tg_parser.domain.models import Source
from tg_parser.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_LOCKED, EXIT_OK, EXIT_RATE_LIMITED, EXIT_USAGE
from tg_parser.ingestion import client as client_module
from tg_parser.ingestion.locks import source_lock
from tg_parser.stores import IngestionStore, RawStore

Invoke = Callable[..., Result]
API_HASH = "0123456789abcdef0123456789abcdef"


def string_session() -> str:
    session = StringSession()
    session.set_dc(2, "149.154.167.51", 443)
    session.auth_key = AuthKey(bytes(range(256)))
    return StringSession.save(session)


SESSION = string_session()


TELEGRAM_ENV = {"TELEGRAM_API_ID": "12345", "TELEGRAM_API_HASH": API_HASH, "TELEGRAM_SESSION": SESSION}


def one_error_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


@pytest.fixture(autouse=True)
def _cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # no developer .env


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> FakeTelegram:
    world = FakeTelegram()
    monkeypatch.setattr(client_module, "client_factory", world.factory())
    return world


@pytest.fixture
def run(settings: Settings) -> Invoke:
    base = {**db_env(settings), **TELEGRAM_ENV}

    def invoke(*args: str, input: str | None = None, **env: str | None) -> Result:
        merged = {**base, **env}
        result = CliRunner().invoke(cli, list(args), env=merged, input=input, prog_name="tg-parser")
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError("command crashed:\n" + "".join(traceback.format_exception(result.exception)))
        assert "Traceback" not in result.output
        assert SESSION not in result.output and API_HASH not in result.output
        return result

    return invoke


def add_channel_source(settings: Settings, world: FakeTelegram, channel_id: int, username: str, **kw) -> None:
    channel = world.channels[channel_id]
    db = open_database(settings)
    try:
        IngestionStore(db).add_source(
            Source(
                source_id=username,
                channel_id=channel_id,
                username=username,
                access_hash=channel.access_hash,
                title=channel.title,
                **kw,
            )
        )
    finally:
        db.close()


def test_ingest_all_then_again(run, settings, world):
    news = world.add_channel(1001, "News", "newsfeed")
    tech = world.add_channel(1002, "Tech", "techfeed")
    for i in range(120):
        world.post(news, f"news {i}")
    world.post(tech, "tech 0")
    add_channel_source(settings, world, 1001, "newsfeed")
    add_channel_source(settings, world, 1002, "techfeed")
    result = run("ingest", "--all")
    assert result.exit_code == EXIT_OK, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines == [
        "newsfeed: ok, 120 new post(s) of 120 fetched",
        "techfeed: ok, 1 new post(s) of 1 fetched",
    ]
    result = run("ingest", "--source", "newsfeed", "--json")
    assert result.exit_code == EXIT_OK
    data = json.loads(result.stdout)
    assert data[0]["status"] == "ok" and data[0]["posts_inserted"] == 0 and data[0]["posts_rechecked"] == 100
    db = open_database(settings)
    try:
        assert RawStore(db).count() == 121
    finally:
        db.close()


def test_ingest_limit(run, settings, world):
    news = world.add_channel(1001, "News", "newsfeed")
    for i in range(30):
        world.post(news, f"news {i}")
    add_channel_source(settings, world, 1001, "newsfeed")
    result = run("ingest", "--source", "newsfeed", "--limit", "10")
    assert result.exit_code == 0 and "10 new post(s)" in result.stdout


def test_lock_held_exits_4_with_one_line(run, settings, world):
    world.add_channel(1001, "News", "newsfeed")
    add_channel_source(settings, world, 1001, "newsfeed")
    db = open_database(settings)
    try:
        with source_lock(db, "newsfeed"):
            result = run("ingest", "--source", "newsfeed")
    finally:
        db.close()
    assert result.exit_code == EXIT_LOCKED
    line = one_error_line(result)
    assert "'newsfeed' is being ingested by another run" in line
    assert world.calls(functions.messages.GetHistoryRequest) == []


def test_long_flood_wait_exits_5(run, settings, world):
    news = world.add_channel(1001, "News", "newsfeed")
    world.post(news, "x")
    add_channel_source(settings, world, 1001, "newsfeed")
    world.fail(functions.messages.GetHistoryRequest, lambda r: tg_errors.FloodWaitError(r, capture=86400))
    result = run("ingest", "--all")
    assert result.exit_code == EXIT_RATE_LIMITED
    assert "rate-limited 1 source(s) (newsfeed)" in one_error_line(result)
    result = run("ingest", "--all")  # still parked: no request is made
    assert result.exit_code == EXIT_RATE_LIMITED
    assert len(world.calls(functions.messages.GetHistoryRequest)) == 1


def test_failed_source_exits_1_and_others_still_run(run, settings, world):
    world.add_channel(1001, "Secret", "secretfeed", private=True)
    ok = world.add_channel(1002, "Open", "openfeed")
    world.post(ok, "hello")
    add_channel_source(settings, world, 1001, "secretfeed")
    add_channel_source(settings, world, 1002, "openfeed")
    result = run("ingest", "--all")
    assert result.exit_code == EXIT_FAILURE
    assert "1 of 2 source(s) failed (secretfeed): ChannelPrivateError" in one_error_line(result)
    assert "openfeed: ok, 1 new post(s)" in result.stdout
    listed = {s["source_id"]: s for s in json.loads(run("sources", "list", "--json").stdout)}
    assert listed["secretfeed"]["status"] == "error" and listed["secretfeed"]["fail_count"] == 1
    assert listed["secretfeed"]["last_error"].startswith("ChannelPrivateError")
    result = run("ingest", "--all")  # a source in error is left alone until resumed
    assert result.exit_code == EXIT_OK and "secretfeed" not in result.stdout


def test_session_rejected_mid_run_exits_3(run, settings, world):
    news = world.add_channel(1001, "News", "newsfeed")
    world.post(news, "x")
    add_channel_source(settings, world, 1001, "newsfeed")
    world.fail(functions.messages.GetHistoryRequest, lambda r: tg_errors.SessionRevokedError(r))
    result = run("ingest", "--all")
    assert result.exit_code == EXIT_CONFIG
    assert "telegram login" in one_error_line(result)


def test_not_logged_in_fails_fast_with_exit_3(run, settings, world):
    world.authorized = False
    world.add_channel(1001, "News", "newsfeed")
    add_channel_source(settings, world, 1001, "newsfeed")
    result = run("ingest", "--all")
    assert result.exit_code == EXIT_CONFIG
    assert "not logged in" in one_error_line(result) and "tg-parser telegram login" in result.stderr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"TELEGRAM_API_ID": None}, "TELEGRAM_API_ID not set"),
        (
            {"TELEGRAM_API_HASH": None, "TELEGRAM_API_ID": None},
            "TELEGRAM_API_ID and TELEGRAM_API_HASH not set",
        ),
        ({"TELEGRAM_SESSION": None}, "no Telegram session configured"),
        ({"TELEGRAM_SESSION": "1" + "A" * 40}, "TELEGRAM_SESSION is not a valid Telethon string session"),
        (
            {"TELEGRAM_SESSION": None, "TELEGRAM_SESSION_FILE": "nowhere/tg"},
            "nowhere/tg.session, which does not exist",
        ),
    ],
)
def test_telegram_configuration_errors_exit_3(run, settings, env, expected):
    """The real client factory: nothing is sent anywhere, the settings alone are wrong."""
    db = open_database(settings)
    try:
        IngestionStore(db).add_source(Source(source_id="x", username="xchannel"))
    finally:
        db.close()
    result = run("ingest", "--all", **env)
    assert result.exit_code == EXIT_CONFIG
    line = one_error_line(result)
    assert expected in line
    assert "AAAAAAAA" not in line  # the bad session is not echoed


def test_usage_errors_exit_2(run, world):
    assert run("ingest").exit_code == EXIT_USAGE
    assert run("ingest", "--all", "--source", "x").exit_code == EXIT_USAGE
    result = run("ingest", "--from-export", "x.json", "--all")
    assert result.exit_code == EXIT_USAGE and "cannot be combined" in one_error_line(result)
    result = run("ingest", "--source", "nope")
    assert result.exit_code == EXIT_USAGE and "no source 'nope'" in one_error_line(result)
    assert run("ingest", "--all", "--chat", "x").exit_code == EXIT_USAGE


def test_no_sources_is_not_an_error(run, world):
    result = run("ingest", "--all")
    assert result.exit_code == EXIT_OK and "No active Telegram sources" in result.stdout


# --- sources add -------------------------------------------------------------------------------------


def test_sources_add_resolves_through_telegram(run, settings, world):
    channel = world.add_channel(1001, "News Daily", "NewsFeed")
    result = run("sources", "add", "https://t.me/NewsFeed", "--comments", "--json")
    assert result.exit_code == 0, result.stderr
    source = json.loads(result.stdout)["source"]
    assert source["source_id"] == "newsfeed"
    assert (source["channel_id"], source["username"], source["title"]) == (1001, "NewsFeed", "News Daily")
    assert source["access_hash"] == channel.access_hash and source["include_comments"] is True

    db = open_database(settings)
    try:
        IngestionStore(db).advance_post_cursor("newsfeed", 42)
    finally:
        db.close()
    # The same channel by its numeric id (the session has seen it): same source, cursor kept.
    result = run("sources", "add", "1001", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["created"] is False and data["source"]["source_id"] == "newsfeed"
    assert data["source"]["last_post_id"] == 42

    result = run("sources", "add", "@no_such_channel")
    assert result.exit_code == EXIT_FAILURE
    assert "Telegram does not know @no_such_channel" in one_error_line(result)
    world.add_channel(1003, "Unseen", "unseenfeed")
    result = run("sources", "add", "1003")  # no access hash anywhere: say how to add it instead
    assert result.exit_code == EXIT_FAILURE
    assert "add it by @username or t.me link instead" in one_error_line(result)


def test_sources_add_offline_without_credentials(run, world):
    world.add_channel(1001, "News", "newsfeed")
    result = run(
        "sources",
        "add",
        "@newsfeed",
        "--json",
        TELEGRAM_API_ID=None,
        TELEGRAM_API_HASH=None,
        TELEGRAM_SESSION=None,
    )
    assert result.exit_code == 0
    source = json.loads(result.stdout)["source"]
    assert source["channel_id"] is None and source["access_hash"] is None and source["username"] == "newsfeed"
    assert world.requests == []


def test_sources_add_not_logged_in(run, world):
    world.authorized = False
    result = run("sources", "add", "@newsfeed")
    assert result.exit_code == EXIT_CONFIG and "telegram login" in one_error_line(result)


# --- telegram login / status -------------------------------------------------------------------------


def test_login_prints_a_string_session(run, world):
    world.authorized = False
    result = run("telegram", "login", input="+41791234567\n00000\n12345\n", TELEGRAM_SESSION=None)
    assert result.exit_code == 0, result.stderr
    assert "That code is not right" in result.stdout
    assert "Logged in as Test User (@tester)" in result.stdout
    line = next(line for line in result.stdout.splitlines() if line.startswith("TELEGRAM_SESSION="))
    session = StringSession(line.split("=", 1)[1])  # a real, loadable Telethon string session
    assert session.auth_key is not None and session.dc_id == 2
    status = run("telegram", "status", "--json", TELEGRAM_SESSION=line.split("=", 1)[1])
    assert status.exit_code == 0 and json.loads(status.stdout)["username"] == "tester"


def test_login_with_two_step_password(run, world):
    world.authorized = False
    world.password = "correct horse"
    result = run(
        "telegram",
        "login",
        "--phone",
        "+41791234567",
        input="12345\nwrong\ncorrect horse\n",
        TELEGRAM_SESSION=None,
    )
    assert result.exit_code == 0, result.stderr
    assert "That password is not right" in result.stdout and "Logged in as" in result.stdout
    assert "correct horse" not in result.stdout


def test_login_rejects_a_bad_phone_number(run, world):
    world.authorized = False
    result = run("telegram", "login", "--phone", "12", TELEGRAM_SESSION=None)
    assert result.exit_code == EXIT_USAGE and "rejected the phone number" in one_error_line(result)


def test_status_when_not_logged_in(run, world):
    world.authorized = False
    result = run("telegram", "status")
    assert result.exit_code == EXIT_CONFIG and "not logged in" in one_error_line(result)


def test_telegram_unreachable(run, world):
    world.offline = True
    result = run("telegram", "status")
    assert result.exit_code == EXIT_FAILURE and "cannot connect to Telegram" in one_error_line(result)
