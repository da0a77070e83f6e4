"""Telegram in production (issue 18): failures a real server and Telethon produce, against the grown fake.

Each test reproduces one failure — an overlapping run on one session, a lost connection, an error while
connecting, a stale access hash, an unreadable discussion group, a 406 that is not a dead session — and
asserts the clearly classified state it now ends in, with nothing fetched lost. Every test that touches
storage runs on SQLite and PostgreSQL (the parametrised `db`/`settings` fixtures).
"""

from __future__ import annotations

import json
import random
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from support.cli import db_env
from support.fake_telegram import FakeChannel, FakeTelegram, file_session
from telethon import errors as tg_errors
from telethon.crypto import AuthKey
from telethon.sessions import SQLiteSession, StringSession
from telethon.tl import functions

from tg_parser.backoff import Backoff
from tg_parser.cli.main import cli
from tg_parser.config import Settings
from tg_parser.db.base import Database
from tg_parser.db.connect import open_database
from tg_parser.domain.channels import ChannelRef
from tg_parser.domain.models import Source
from tg_parser.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_LOCKED, EXIT_OK, EXIT_RATE_LIMITED, EXIT_USAGE
from tg_parser.ingestion import client as client_module
from tg_parser.ingestion.client import TelegramGateway, session_lock_name
from tg_parser.ingestion.errors import TelegramSessionBusy
from tg_parser.ingestion.runner import Ingestor, Policy
from tg_parser.stores import IngestionStore, RawStore

CHANNEL = 1001
OTHER = 1002
GROUP = 2002
API_HASH = "0123456789abcdef0123456789abcdef"


def auth_key(seed: int) -> AuthKey:
    return AuthKey(bytes((seed + i) % 256 for i in range(256)))


def string_session(seed: int = 0) -> str:
    session = StringSession()
    session.set_dc(2, "149.154.167.51", 443)
    session.auth_key = auth_key(seed)
    return StringSession.save(session)


SESSION = string_session()
TELEGRAM_ENV = {"TELEGRAM_API_ID": "12345", "TELEGRAM_API_HASH": API_HASH, "TELEGRAM_SESSION": SESSION}


def make_session_file(path: Path, seed: int = 0) -> Path:
    """A logged-in Telethon session file, as 'tg-parser telegram login' leaves it."""
    session = SQLiteSession(str(path))
    session.set_dc(2, "149.154.167.51", 443)
    session.auth_key = auth_key(seed)
    session.save()
    session.close()
    return Path(session.filename)


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture
def world() -> FakeTelegram:
    return FakeTelegram()


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The gateway's waits between connect tries, recorded instead of slept (CLI runs too)."""
    waits: list[float] = []
    monkeypatch.setattr(client_module, "sleep", waits.append)
    return waits


@pytest.fixture
def run(settings: Settings, world: FakeTelegram, slept: list[float], tmp_path: Path, monkeypatch) -> Any:
    monkeypatch.setattr(client_module, "client_factory", world.factory())
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # no developer .env
    base = {**db_env(settings), **TELEGRAM_ENV}

    def invoke(*args: str, **env: str | None) -> Result:
        result = CliRunner().invoke(cli, list(args), env={**base, **env}, prog_name="tg-parser")
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError("command crashed:\n" + "".join(traceback.format_exception(result.exception)))
        assert "Traceback" not in result.output and "unexpected error" not in result.output.lower()
        assert SESSION not in result.output
        return result

    return invoke


def one_error_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


def add_source(db: Database, world: FakeTelegram, channel_id: int = CHANNEL, **fields: Any) -> Source:
    channel = world.channels[channel_id]
    store = IngestionStore(db)
    source = Source(
        source_id=fields.pop("source_id", channel.username or str(channel_id)),
        channel_id=channel_id,
        username=fields.pop("username", channel.username),
        title=channel.title,
        access_hash=fields.pop("access_hash", channel.access_hash),
        **fields,
    )
    store.add_source(source)
    return store.get_source(source.source_id)


@pytest.fixture
def ingestor(db: Database, world: FakeTelegram, settings: Settings) -> Iterator[Callable[..., Ingestor]]:
    """Build an Ingestor over an opened gateway; every wait (runner and reconnects) goes to `.slept`."""
    made: list[Ingestor] = []

    def build(**policy: Any) -> Ingestor:
        slept: list[float] = []
        gateway = TelegramGateway(world.client(), pause=slept.append, rng=random.Random(3))
        gateway.open(db=db)
        options: dict[str, Any] = {"sleep": slept.append, "rng": random.Random(7), "batch_size": 500}
        options.update(policy)
        made.append(Ingestor(db, gateway, run_id="prod-run", policy=Policy(**options)))
        made[-1].slept = slept  # type: ignore[attr-defined]
        return made[-1]

    yield build
    for built in made:
        built.gateway.close()


def stored_posts(db: Database, channel_id: int = CHANNEL) -> list[int]:
    return sorted(m.message_id for m in RawStore(db).stream_channel(channel_id) if m.message_type == "post")


def source_row(db: Database, source_id: str) -> Source:
    source = IngestionStore(db).get_source(source_id)
    assert source is not None
    return source


def news(world: FakeTelegram, posts: int = 0, **kw: Any) -> FakeChannel:
    channel = world.add_channel(CHANNEL, "News", "newsfeed", **kw)
    for i in range(posts):
        world.post(channel, f"post {i}")
    return channel


# --- 1 and 7: one process per Telegram session -------------------------------------------------------


def test_overlapping_run_on_a_session_file_exits_4_before_any_source(run, settings, world, db, tmp_path):
    """The first run holds the session file (write-locked while connected); the overlapping cron run is
    told so in one line with exit 4 and touches nothing, then runs normally once the first has ended."""
    news(world, 3)
    add_source(db, world)
    path = make_session_file(tmp_path / "tg")
    env = {"TELEGRAM_SESSION": None, "TELEGRAM_SESSION_FILE": str(path)}

    first = TelegramGateway(world.client(file_session(str(path))))
    first.open(db=db)
    first.resolve(ChannelRef(username="newsfeed"))  # entity writes: the file is write-locked now
    try:
        connects = world.connects
        result = run("ingest", "--all", **env)
        assert result.exit_code == EXIT_LOCKED
        assert "another tg-parser run is using the Telegram session" in one_error_line(result)
        assert world.connects == connects, "the second run must not even connect"
        source = source_row(db, "newsfeed")
        assert (source.fail_count, source.status, source.last_post_id) == (0, "active", 0)
        assert IngestionStore(db).recent_runs("newsfeed") == []

        result = run("sources", "add", "@newsfeed", **env)
        assert result.exit_code == EXIT_LOCKED
        assert "another tg-parser run is using the Telegram session" in one_error_line(result)
        # `telegram status` needs no database (so no lock): the write-locked file itself is reported.
        result = run("telegram", "status", **env)
        assert result.exit_code == EXIT_LOCKED
        assert f"the Telegram session file {path} is in use by another process" in one_error_line(result)
    finally:
        first.close()
    result = run("ingest", "--all", **env)
    assert result.exit_code == EXIT_OK, result.stderr
    assert stored_posts(db) == [1, 2, 3]


def test_session_file_locked_by_another_program_is_exit_4_not_unexpected(run, settings, world, db, tmp_path):
    """Without tg-parser's lock (another program, another data directory), the write-locked file still
    ends as exit 4 — Telethon's sqlite3 'database is locked' from connect() is classified, not a crash."""
    news(world, 1)
    add_source(db, world)
    path = make_session_file(tmp_path / "tg")
    holder = TelegramGateway(world.client(file_session(str(path))))
    holder.open()  # no database: no session lock, only the file's own write lock
    holder.resolve(ChannelRef(username="newsfeed"))
    try:
        result = run("ingest", "--all", TELEGRAM_SESSION=None, TELEGRAM_SESSION_FILE=str(path))
    finally:
        holder.close()
    assert result.exit_code == EXIT_LOCKED
    line = one_error_line(result)
    assert f"the Telegram session file {path} is in use by another process" in line
    assert source_row(db, "newsfeed").fail_count == 0


def test_one_session_is_used_by_one_process_across_hosts(db, settings, world):
    """Two processes (on PostgreSQL: possibly two hosts) with one string session: the second is refused at
    once instead of making Telegram revoke the key (AUTH_KEY_DUPLICATED); another session is not."""
    other_host = open_database(settings)
    try:
        first = TelegramGateway(world.client(StringSession(SESSION))).open(db=db)
        second = TelegramGateway(world.client(StringSession(SESSION)))
        with pytest.raises(TelegramSessionBusy) as caught:
            second.open(db=other_host)
        assert caught.value.exit_code == EXIT_LOCKED
        assert "another tg-parser run is using the Telegram session" in caught.value.one_line()
        assert world.connects == 1
        another = TelegramGateway(world.client(StringSession(string_session(seed=9)))).open(db=other_host)
        another.close()
        first.close()
        again = TelegramGateway(world.client(StringSession(SESSION))).open(db=other_host)  # released
        again.close()
    finally:
        other_host.close()


def test_session_lock_name_is_the_session_not_its_container(tmp_path):
    path = make_session_file(tmp_path / "tg")
    as_file, as_string = SQLiteSession(str(path)), StringSession(SESSION)
    try:
        name = session_lock_name(as_string)
        assert name == session_lock_name(as_file)  # the same auth key is the same session to Telegram
        assert name.startswith("telegram-session:") and SESSION not in name
        assert session_lock_name(StringSession(string_session(seed=1))) != name
        assert session_lock_name(StringSession()) is None  # nothing to protect before login
    finally:
        as_file.close()


# --- 2: a lost connection ----------------------------------------------------------------------------


def test_lost_connection_is_reconnected_and_nothing_is_lost(db, world, ingestor):
    news(world, 250)
    add_source(db, world)
    # The second history request breaks the connection; every call after it fails with Telethon's
    # "Cannot send requests while disconnected" until the client connects again.
    world.fail(functions.messages.GetHistoryRequest, world.drop, skip=1)
    built = ingestor(batch_size=100)
    outcome = built.run_source(source_row(db, "newsfeed"))
    assert outcome.status == "ok", outcome.message
    assert built.gateway.reconnects == 1 and world.connects == 2
    assert stored_posts(db) == list(range(1, 251))
    source = source_row(db, "newsfeed")
    assert source.last_post_id == 250 and source.fail_count == 0


def test_connection_that_cannot_come_back_ends_the_run_without_charging_sources(db, world, ingestor):
    channel = news(world, 150)
    other = world.add_channel(OTHER, "Other", "otherfeed")
    world.post(other, "x")
    add_source(db, world)
    add_source(db, world, OTHER)

    def outage(request: Any) -> BaseException:
        world.offline = True  # the network is gone: reconnects fail too
        return world.drop(request)

    world.fail(functions.messages.GetHistoryRequest, outage, skip=1)
    built = ingestor(batch_size=100)
    outcomes = built.run([source_row(db, "newsfeed"), source_row(db, "otherfeed")])
    assert [o.status for o in outcomes] == ["unavailable"]  # the run stopped: the next would fail alike
    assert "could not reconnect (3 tries" in outcomes[0].message
    assert len(built.slept) >= 2  # reconnects were spaced by back-off
    for source_id in ("newsfeed", "otherfeed"):
        source = source_row(db, source_id)
        assert (source.status, source.fail_count, source.last_error) == ("active", 0, None)
    assert stored_posts(db) == list(range(1, 101)), "the page read before the drop is kept"
    assert source_row(db, "newsfeed").last_post_id == 100
    runs = IngestionStore(db).recent_runs("newsfeed")
    assert len(runs) == 1 and not runs[0].success  # the attempt is journaled
    assert not [r for r in world.calls(functions.messages.GetHistoryRequest) if r.peer.channel_id == OTHER]

    world.offline = False  # the next run resumes from the stored cursor
    outcome = ingestor().run_source(source_row(db, "newsfeed"))
    assert outcome.status == "ok" and stored_posts(db) == sorted(m for m in channel.messages)


def test_cli_says_telegram_unavailable_with_exit_1(run, settings, world, db):
    news(world, 120)
    add_source(db, world)

    def outage(request: Any) -> BaseException:
        world.offline = True
        return world.drop(request)

    world.fail(functions.messages.GetHistoryRequest, outage, skip=1)
    result = run("ingest", "--all")
    assert result.exit_code == EXIT_FAILURE
    line = one_error_line(result)
    assert "Telegram unavailable while ingesting 'newsfeed'" in line and "stored cursor" in line
    assert source_row(db, "newsfeed").fail_count == 0


# --- 3: errors while connecting ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_type", "error", "times", "exit_code", "expected"),
    [
        (
            functions.users.GetUsersRequest,
            lambda r: tg_errors.FloodWaitError(r, capture=300),
            1,
            EXIT_RATE_LIMITED,
            "Telegram asked to wait 300s while connecting",
        ),
        (
            functions.updates.GetStateRequest,
            lambda r: tg_errors.AuthKeyDuplicatedError(r),
            1,
            EXIT_CONFIG,
            "used from two places at once (AUTH_KEY_DUPLICATED)",
        ),
        (
            functions.help.GetConfigRequest,
            lambda r: tg_errors.RpcCallFailError(r),
            None,
            EXIT_FAILURE,
            "cannot connect to Telegram: RpcCallFailError",
        ),
        (functions.help.GetConfigRequest, lambda r: tg_errors.RpcCallFailError(r), 2, EXIT_OK, None),
    ],
    ids=["flood-wait", "auth-key-duplicated", "server-error-persists", "server-error-retried"],
)
def test_errors_during_connect_are_classified(
    run, settings, world, db, slept, request_type, error, times, exit_code, expected
):
    news(world, 2)
    add_source(db, world)
    world.fail(request_type, error, times=times)
    result = run("ingest", "--all")
    assert result.exit_code == exit_code, result.output
    if expected is not None:
        assert expected in one_error_line(result)
        assert world.calls(functions.messages.GetHistoryRequest) == []
    else:
        assert stored_posts(db) == [1, 2] and len(slept) == 2  # two failed connects, waited between
    assert source_row(db, "newsfeed").fail_count == 0


# --- 4: stale access hashes --------------------------------------------------------------------------


def test_stale_access_hash_is_re_resolved_once_by_username(db, world, ingestor):
    channel = news(world, 5)
    add_source(db, world, access_hash=channel.access_hash + 1)  # stored by another account's session
    outcome = ingestor().run_source(source_row(db, "newsfeed"))
    assert outcome.status == "ok", outcome.message
    assert "access hash refreshed through @newsfeed" in outcome.message
    source = source_row(db, "newsfeed")
    assert source.access_hash == channel.access_hash and source.fail_count == 0
    assert stored_posts(db) == [1, 2, 3, 4, 5]
    assert len(world.calls(functions.contacts.ResolveUsernameRequest)) == 1


def test_logging_in_with_another_account_keeps_every_source_running(db, world, ingestor):
    """Access hashes belong to one account: after a new login every stored hash is stale."""
    news(world, 2)
    other = world.add_channel(OTHER, "Other", "otherfeed")
    world.post(other, "x")
    add_source(db, world)
    add_source(db, world, OTHER)
    for channel in world.channels.values():
        channel.access_hash += 1000  # what the new account's hashes look like
    outcomes = ingestor().run([source_row(db, "newsfeed"), source_row(db, "otherfeed")])
    assert [o.status for o in outcomes] == ["ok", "ok"]
    assert source_row(db, "otherfeed").access_hash == other.access_hash


def test_stale_hash_without_username_says_exactly_what_to_do(db, world, ingestor):
    channel = news(world, 2)
    add_source(db, world, source_id="news", username=None, access_hash=channel.access_hash + 1)
    outcome = ingestor().run_source(source_row(db, "news"))
    assert outcome.status == "failed"
    source = source_row(db, "news")
    assert source.status == "error"
    assert "no longer valid" in source.last_error and "has no username" in source.last_error
    assert world.calls(functions.contacts.ResolveUsernameRequest) == []


def test_username_now_elsewhere_is_not_taken_for_the_channel(db, world, ingestor):
    channel = news(world, 2)
    add_source(db, world, access_hash=channel.access_hash + 1)
    channel.username = None
    world.add_channel(3003, "Squatter", "newsfeed")
    outcome = ingestor().run_source(source_row(db, "newsfeed"))
    assert outcome.status == "failed" and "now belongs to channel 3003" in outcome.message
    assert source_row(db, "newsfeed").channel_id == CHANNEL and stored_posts(db) == []


def test_sources_add_with_a_stale_hash_is_one_clean_line(run, settings, world, db):
    channel = news(world)
    add_source(db, world, source_id="news", username=None, access_hash=channel.access_hash + 1)
    result = run("sources", "add", str(CHANNEL))
    assert result.exit_code == EXIT_FAILURE
    line = one_error_line(result)
    assert "stored access hash is no longer valid" in line and "add it by @username" in line


# --- 5: discussion-group failures --------------------------------------------------------------------


def comments_world(world: FakeTelegram) -> FakeChannel:
    channel = world.add_channel(CHANNEL, "News", "newsfeed", discussion_id=GROUP)
    for i in range(3):
        world.post(channel, f"post {i}")
        world.comment(channel, i + 1, f"comment on {i}")
    return channel


def stored_comments(db: Database) -> list[int]:
    return sorted(m.message_id for m in RawStore(db).stream_channel(CHANNEL) if m.message_type == "comment")


def test_banned_from_the_discussion_group_keeps_the_posts(db, world, ingestor):
    channel = comments_world(world)
    add_source(db, world, include_comments=True)
    world.ban_from_discussion(channel)
    outcome = ingestor().run_source(source_row(db, "newsfeed"))
    assert outcome.status == "ok", outcome.message
    assert "comments unavailable" in outcome.message and "ChannelPrivateError" in outcome.message
    source = source_row(db, "newsfeed")
    assert (source.status, source.fail_count, source.comments_unavailable) == ("active", 0, True)
    assert stored_posts(db) == [1, 2, 3] and stored_comments(db) == []
    assert IngestionStore(db).unavailable_threads("newsfeed") == set()  # no thread is given up for it

    world.channels[GROUP].private = False  # unbanned: the next run reads the comments
    world.post(channel, "post 3")
    outcome = ingestor().run_source(source_row(db, "newsfeed"))
    assert outcome.status == "ok" and outcome.counts.comments_inserted == 3
    assert source_row(db, "newsfeed").comments_unavailable is False


def test_a_permanent_error_on_one_thread_marks_only_that_thread(db, world, ingestor):
    comments_world(world)
    add_source(db, world, include_comments=True)
    world.fail(
        functions.messages.GetRepliesRequest,
        lambda r: tg_errors.FilerefUpgradeNeededError(r),  # a 406 that is not a dead session
        where=lambda r: r.msg_id == 2,
    )
    outcome = ingestor().run_source(source_row(db, "newsfeed"))
    assert outcome.status == "ok", outcome.message
    assert outcome.counts.threads_unavailable == 1 and outcome.counts.comments_inserted == 2
    assert IngestionStore(db).unavailable_threads("newsfeed") == {2}
    assert source_row(db, "newsfeed").status == "active"


def test_unlinked_discussion_group_keeps_the_posts(db, world, ingestor):
    channel = comments_world(world)
    add_source(db, world, include_comments=True)
    world.unlink_discussion(channel)
    outcome = ingestor().run_source(source_row(db, "newsfeed"))
    assert outcome.status == "ok", outcome.message
    assert stored_posts(db) == [1, 2, 3] and "no discussion group" in outcome.message
    assert outcome.counts.threads_unavailable == 0  # no thread is given up: the channel has no group
    source = source_row(db, "newsfeed")
    assert (source.status, source.comments_unavailable) == ("active", True)


# --- 6: a 406 is not a dead session ------------------------------------------------------------------


def test_a_406_other_than_auth_key_duplicated_does_not_stop_the_run(db, world, ingestor):
    news(world, 2)
    other = world.add_channel(OTHER, "Other", "otherfeed")
    world.post(other, "x")
    add_source(db, world)
    add_source(db, world, OTHER)
    world.fail(
        functions.messages.GetHistoryRequest,
        lambda r: tg_errors.FilerefUpgradeNeededError(r),
        where=lambda r: r.peer.channel_id == CHANNEL,
        times=None,
    )
    outcomes = ingestor().run([source_row(db, "newsfeed"), source_row(db, "otherfeed")])
    assert [o.status for o in outcomes] == ["failed", "ok"]
    assert not outcomes[0].auth_failed
    assert source_row(db, "otherfeed").fail_count == 0


def test_auth_key_duplicated_mid_run_still_stops_the_run(db, world, ingestor):
    news(world, 2)
    other = world.add_channel(OTHER, "Other", "otherfeed")
    world.post(other, "x")
    add_source(db, world)
    add_source(db, world, OTHER)
    world.fail(functions.messages.GetHistoryRequest, lambda r: tg_errors.AuthKeyDuplicatedError(r))
    outcomes = ingestor().run([source_row(db, "newsfeed"), source_row(db, "otherfeed")])
    assert len(outcomes) == 1 and outcomes[0].auth_failed


# --- 2 (the fake): short pages and empty slots -------------------------------------------------------


def test_short_pages_that_are_not_the_last_lose_nothing(db, world, ingestor):
    news(world, 230)
    add_source(db, world)
    world.page_cap = 7  # every answer is short although more follows
    outcome = ingestor().run_source(source_row(db, "newsfeed"))
    assert outcome.status == "ok" and outcome.counts.posts_inserted == 230
    assert stored_posts(db) == list(range(1, 231))
    assert source_row(db, "newsfeed").last_post_id == 230


def test_empty_message_slots_are_skipped_and_passed(db, world, ingestor):
    news(world, 150)
    add_source(db, world)
    world.empty_ids = {(CHANNEL, i) for i in (5, 99, 100, 150)}
    outcome = ingestor().run_source(source_row(db, "newsfeed"))
    assert outcome.status == "ok"
    assert stored_posts(db) == [i for i in range(1, 151) if i not in (5, 99, 100, 150)]
    assert source_row(db, "newsfeed").last_post_id >= 149


# --- 7: sources add errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "exit_code", "expected"),
    [
        (
            lambda r: tg_errors.UsernameInvalidError(r),
            EXIT_USAGE,
            "@newsfeed is not a valid Telegram username",
        ),
        (
            lambda r: tg_errors.FloodWaitError(r, capture=120),
            EXIT_RATE_LIMITED,
            "Telegram asked to wait 120s before resolving @newsfeed",
        ),
        (
            lambda r: tg_errors.ChannelInvalidError(r),
            EXIT_FAILURE,
            "Telegram refused @newsfeed: ChannelInvalidError",
        ),
        (
            lambda r: tg_errors.RpcCallFailError(r),
            EXIT_FAILURE,
            "Telegram did not answer while resolving @newsfeed",
        ),
    ],
    ids=["username-invalid", "flood-wait", "channel-invalid", "server-error"],
)
def test_sources_add_errors_are_one_line_each(run, settings, world, db, error, exit_code, expected):
    news(world)
    world.fail(functions.contacts.ResolveUsernameRequest, error, times=None)
    result = run("sources", "add", "@newsfeed")
    assert result.exit_code == exit_code, result.output
    assert expected in one_error_line(result)
    assert IngestionStore(db).list_sources() == []


def test_file_session_login_then_ingest(run, settings, world, db, tmp_path):
    """A file session stays a file session: login writes it, ingest uses it, status reads it."""
    news(world, 2)
    add_source(db, world)
    world.authorized = False
    path = tmp_path / "account"
    env = {"TELEGRAM_SESSION": None, "TELEGRAM_SESSION_FILE": str(path)}
    result = CliRunner().invoke(
        cli,
        ["telegram", "login", "--phone", "+41791234567"],
        env={**db_env(settings), **TELEGRAM_ENV, **env},
        input="12345\n",
        prog_name="tg-parser",
    )
    assert result.exit_code == 0, result.output
    assert f"stored in {path}.session" in result.stdout
    assert SQLiteSession(str(path)).auth_key is not None
    assert run("ingest", "--all", **env).exit_code == EXIT_OK
    status = run("telegram", "status", "--json", **env)
    assert status.exit_code == EXIT_OK and json.loads(status.stdout)["username"] == "tester"
    assert stored_posts(db) == [1, 2]


def test_reconnect_policy_is_bounded(world):
    gateway = TelegramGateway(world.client(), reconnect_attempts=2, backoff=Backoff(base=1.0, cap=1.0))
    waits: list[float] = []
    gateway.sleep = waits.append
    gateway.open()
    world.offline = True
    world.drop()
    with pytest.raises(Exception) as caught:
        gateway.resolve(ChannelRef(username="nobody_here"))
    assert type(caught.value).__name__ == "ConnectionLost" and "2 tries" in str(caught.value)
    assert len(waits) == 1 and 0.5 <= waits[0] <= 1.0
    gateway.close()


HOLDER = """
import os, sys
sys.path.insert(0, {tests!r})
from support.fake_telegram import FakeTelegram, file_session
from tg_parser.config import load_settings
from tg_parser.db.connect import open_database
from tg_parser.domain.channels import ChannelRef
from tg_parser.ingestion.client import TelegramGateway

db = open_database(load_settings(_env_file=None, **{db_settings!r}))
world = FakeTelegram()
world.add_channel(1001, "News", "newsfeed")
gateway = TelegramGateway(world.client(file_session({path!r})))
gateway.open(db=db)
gateway.resolve(ChannelRef(username="newsfeed"))  # the session file is write-locked from here on
print("ready", flush=True)
if sys.stdin.readline().strip() == "kill":
    os._exit(9)  # like kill -9: no cleanup at all
gateway.close()
"""


@pytest.mark.slow
@pytest.mark.parametrize("ending", ["finishes", "is-killed"])
def test_two_processes_on_one_session_file(run, settings, world, db, tmp_path, ending):
    """A real second process holds the session file and the session lock: this run exits 4 at once and
    does nothing; once the holder has ended — even killed — the next run goes ahead."""
    import subprocess
    import sys

    news(world, 2)
    add_source(db, world)
    path = make_session_file(tmp_path / "tg")
    fields = {"db_type", "db_sqlite_dir", "db_host", "db_port", "db_user", "db_name"}
    script = HOLDER.format(
        tests=str(Path(__file__).parent),
        db_settings=settings.model_dump(mode="json", include=fields),
        path=str(path),
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    env = {"TELEGRAM_SESSION": None, "TELEGRAM_SESSION_FILE": str(path)}
    try:
        assert holder.stdout.readline().strip() == "ready"
        result = run("ingest", "--all", **env)
        assert result.exit_code == EXIT_LOCKED
        assert "another tg-parser run is using the Telegram session" in one_error_line(result)
        assert world.connects == 0 and source_row(db, "newsfeed").fail_count == 0
        holder.stdin.write("kill\n" if ending == "is-killed" else "\n")
        holder.stdin.flush()
        holder.wait(timeout=60)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    result = run("ingest", "--all", **env)
    assert result.exit_code == EXIT_OK, result.stderr
    assert stored_posts(db) == [1, 2]


def test_a_follow_up_chunk_of_only_empty_slots_is_passed_by_the_next_run(db, world, ingestor):
    """Telethon gives up paging when a follow-up answer holds only MessageEmpty slots, so the page looks
    like the end; nothing is skipped: the cursor stays before the slots and the next run reads past them."""
    news(world, 150)
    add_source(db, world)
    world.empty_ids = {(CHANNEL, i) for i in (99, 100, 101, 102)}
    first = ingestor().run_source(source_row(db, "newsfeed"))
    assert first.status == "ok" and source_row(db, "newsfeed").last_post_id == 98
    second = ingestor().run_source(source_row(db, "newsfeed"))
    assert second.status == "ok"
    assert stored_posts(db) == [i for i in range(1, 151) if i not in (99, 100, 101, 102)]
    assert source_row(db, "newsfeed").last_post_id == 150
