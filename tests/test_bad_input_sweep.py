"""The bad-input sweep: every CLI command and every API route, given bad values of every kind.

The tables below hold one row per (command or route, parameter, kind of bad value): unknown ids,
malformed and out-of-range dates, bad DSNs, unreadable and binary files, quotes, backslashes, NUL, lone
surrogates, RTL and emoji text, 1 MB strings, negative and huge numbers. Each row is one test id and
asserts: a non-zero exit with one `Error:` line (click's usage errors keep their documented
"Usage / Try --help / Error" lines) or a 4xx JSON answer, never a traceback, never a secret (a DB
password, the OpenAI key, the API key, a DSN's password are all set), and the data unchanged, proved by
`tg-parser db checksum` before and after each group of rows on both dialects.

The click group and the API's routes are enumerated, and a test fails when a command, a route or a
parameter taking a value has no row: a new one cannot escape the sweep. Free text that is legitimately
stored (a source's title and id) is declared in ACCEPTS_ANY_TEXT with the reason; it may be stored, but
must still never traceback, and what cannot be stored (NUL, lone surrogates, 1 MB) is refused.

Most rows run the CLI in this process (click's CliRunner); a few run `tg-parser` as a real process, where
argv cannot carry NUL at all and bytes that are not UTF-8 arrive as lone surrogates (so NUL reaches the CLI
through a file, and the API through query strings and JSON bodies). Some rows run again with
LOG_FORMAT=json, where the error is one JSON line among JSON lines. Over HTTP a 1 MB value goes in a body
(413); query and path values stop at 600 characters (over the API's 500-character limit).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
import pytest
from click.testing import CliRunner
from conftest import PG_TEST_DB, pg_settings, require_postgres, sqlite_settings
from fastapi.routing import APIRoute
from pydantic import SecretStr
from support.api_server import EXAMPLE, ThreadedApi, checksums, free_port, new_key, seed_example
from support.cli import db_env
from support.pg_database import ReusedDatabase

from tg_parser.cli.main import cli
from tg_parser.config import Settings
from tg_parser.db.connect import open_database
from tg_parser.db.sqlite import STORE_FILES

# --- the secrets every row runs with, and must never print ---------------------------------------------

DB_PASSWORD = "sweep-db-pw-4f1c9"
OPENAI_KEY = "sk-sweep-openai-77d2e0"
WEBHOOK_SECRET = "sweep-webhook-5b3a"
DSN_PASSWORD = "sweep-dsn-pw-a81f"
SECRET_ENV = {"DB_PASSWORD": DB_PASSWORD, "OPENAI_API_KEY": OPENAI_KEY, "WEBHOOK_SECRET": WEBHOOK_SECRET}
SECRETS = (DB_PASSWORD, OPENAI_KEY, WEBHOOK_SECRET, DSN_PASSWORD)

# --- kinds of bad values ----------------------------------------------------------------------------

MB = 1_000_000
SURROGATE = "\udcff"  # what a real process makes of the byte 0xFF in argv (surrogateescape)
CLOSED_PORT = free_port()  # nothing listens there: a connection is refused at once

UNKNOWN = "nosuch-0"
TEXTS = [  # two values for four kinds: each CLI call that reaches the database costs a tenth of a second
    ("quotes", 'it\'s "x" back\\slash\\; DROP TABLE sources; --'),
    ("rtl-emoji", "\u202eשלום\u202c \U0001f600\U0001f1fa\U0001f1e6"),
]
IDS = [("unknown", UNKNOWN), *TEXTS, ("1mb", "x" * MB), ("surrogate", SURROGATE)]
DATES = [
    ("feb30", "2025-02-30"),
    ("year1", "0001-01-01T00:00:00+01:00"),
    ("edge", "9999-12-31T23:59:59-01:00"),
    ("1mb", "2" * MB),
    ("surrogate", SURROGATE),
]
INTS = [("negative", "-1"), ("huge", str(10**30)), ("text", "abc")]
CHOICES = [("unknown", "nosuch"), ("1mb", "x" * MB), ("surrogate", SURROGATE)]
BAD_DSNS = [
    ("no-scheme", "not a dsn"),
    ("other-scheme", f"mysql://u:{DSN_PASSWORD}@127.0.0.1/db"),
    ("unclosed-ipv6", f"postgresql://u:{DSN_PASSWORD}@[::1/db"),
    ("port-out-of-range", f"postgresql://u:{DSN_PASSWORD}@127.0.0.1:99999/db"),
    ("refused", f"postgresql://u:{DSN_PASSWORD}@127.0.0.1:{CLOSED_PORT}/db"),
]
UNREACHABLE = f"postgresql://u:{DSN_PASSWORD}@127.0.0.1:{CLOSED_PORT}/db"


# --- the seeded install, per dialect -------------------------------------------------------------------


@dataclass
class Install:
    """A seeded install (the example channel ingested, processed, topicized; an admin key) shared by this
    module's rows on one dialect, with the checksums that every group of rows must leave unchanged."""

    settings: Settings
    files: Path  # scratch files: exports, unreadable and binary inputs
    token: str
    baseline: dict[str, Any] = field(default_factory=dict)
    unchecked: list[str] = field(default_factory=list)  # rows run since the last checksum
    api: ThreadedApi | None = None

    GROUP = 20  # rows between two checksums

    def env(self, **extra: str) -> dict[str, str]:
        """The install's environment; with DATABASE_URL in `extra`, that database alone (no DB_HOST of
        the install that a mistake could fall back to)."""
        where = {} if "DATABASE_URL" in extra else db_env(self.settings)
        return {**where, "LOG_LEVEL": "WARNING", **SECRET_ENV, **extra}

    def verify(self) -> None:
        """The checksums equal the baseline: none of the rows since the last check changed data."""
        rows, self.unchecked = self.unchecked, []
        now = checksums(self.settings)
        changed = sorted(t for t in now.keys() | self.baseline.keys() if now.get(t) != self.baseline.get(t))
        self.baseline = now  # one group is blamed for a change, not every group after it
        assert not changed, f"tables {changed} changed by one of these rows: {rows}"

    def running(self, row_id: str) -> None:
        """Before a row: it belongs to the current group (named if the group's check fails)."""
        self.unchecked.append(row_id)

    def check_if_due(self) -> None:
        if len(self.unchecked) >= self.GROUP:
            self.verify()

    def rebaseline(self) -> None:
        self.baseline = checksums(self.settings)
        self.unchecked = []


def _seed(settings: Settings, files: Path) -> Install:
    seed_example(settings, files / "seed-out")
    db = open_database(settings)
    try:
        token = new_key(db, "sweep-admin", "admin")
    finally:
        db.close()
    install = Install(settings, files, token)
    install.rebaseline()
    return install


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def install(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    files = tmp_path_factory.mktemp("sweep")
    database, current = None, None
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        data = files / "data"
        data.mkdir()
        for name in STORE_FILES.values():
            shutil.copy(template / name, data / name)
        settings = sqlite_settings(data)
    else:
        require_postgres()
        server = request.getfixturevalue("postgresql_noproc")
        database = ReusedDatabase(
            host=server.host,
            port=server.port,
            user=server.user,
            password=server.password,
            dbname=f"{PG_TEST_DB}_sweep",
            template=server.template_dbname,
        )
        settings = pg_settings(database.checkout())
    try:
        current = _seed(settings, files)
        yield current
        current.verify()  # the rows run after the last group's check
    finally:
        if current is not None and current.api is not None:
            current.api.stop()
        if database is not None:
            database.drop()


# --- the CLI table --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cli:
    command: str  # "sources add"
    param: str | None  # the click parameter's name; None: the command as a whole (its environment)
    kind: str
    args: tuple[str, ...]
    exit: int = 2
    env: tuple[tuple[str, str], ...] = ()
    stores: bool = False  # legitimate text: may be stored (ACCEPTS_ANY_TEXT)

    @property
    def id(self) -> str:
        return f"{self.command}:{self.param or '-'}:{self.kind}"


# Free text stored as given (quotes, backslashes, RTL and emoji are data): no row may refuse it.
ACCEPTS_ANY_TEXT = {
    ("sources add", "source_id"): "the source's id, chosen by the operator and stored as typed",
    ("sources add", "title"): "a title shown until Telegram gives the real one, stored as typed",
}

# Files under Install.files, made once per install.
FILES: dict[str, Callable[[Path], None]] = {
    "directory.json": lambda p: p.mkdir(),
    "binary.json": lambda p: p.write_bytes(bytes(range(256)) * 4),
    "empty.json": lambda p: p.write_bytes(b""),
    "latin1.json": lambda p: p.write_bytes('{"name": "caf\xe9"}'.encode("latin-1")),
    "truncated.json": lambda p: p.write_bytes(EXAMPLE.read_bytes()[:700]),
    "nul.json": lambda p: p.write_bytes(
        b'{"name": "a\\u0000b", "type": "public_channel", "id": 1, "messages": ['
    ),
    "not-an-export.json": lambda p: p.write_text('{"hello": "world"}'),
    "a-file": lambda p: p.write_text("not a directory"),
}
MISSING = "missing/result.json"


def _rows(
    command: str, param: str, values: list[tuple[str, str]], build: Callable[[str], list[str]], **kw: Any
) -> list[Cli]:
    return [Cli(command, param, kind, tuple(build(value)), **kw) for kind, value in values]


def _with_exit(rows: list[Cli], **exits: int) -> list[Cli]:
    return [Cli(r.command, r.param, r.kind, r.args, exits.get(r.kind, r.exit), r.env, r.stores) for r in rows]


OUT = "{files}/out"  # formatted per install


def _cli_table() -> list[Cli]:
    rows: list[Cli] = []
    add = rows.extend
    not_unknown = [v for v in IDS if v[0] != "unknown"]
    # api-keys
    add(_rows("api-keys create", "name", [*not_unknown, ("empty", "")], lambda v: ["api-keys", "create", v]))
    add(
        _rows(
            "api-keys create", "scope", CHOICES, lambda v: ["api-keys", "create", "sweep-new", "--scope", v]
        )
    )
    add(_rows("api-keys revoke", "name", IDS, lambda v: ["api-keys", "revoke", v]))
    # db
    add(_rows("db check-orphans", "batch", INTS, lambda v: ["db", "check-orphans", "--batch", v]))
    for sub in ("checksum", "status", "upgrade"):
        add(_rows(f"db {sub}", "stores", CHOICES, lambda v, sub=sub: ["db", sub, "--store", v]))
    mig = ["db", "migrate-to-postgres", "--to", UNREACHABLE]
    add(
        _with_exit(
            _rows(
                "db migrate-to-postgres",
                "dsn",
                [*BAD_DSNS, ("surrogate", SURROGATE)],
                lambda v: ["db", "migrate-to-postgres", "--to", v],
            ),
            **{k: 3 for k, _ in BAD_DSNS},
        )
    )
    add(
        _with_exit(
            _rows(
                "db migrate-to-postgres",
                "source_dir",
                [("missing", "{files}/missing"), ("a-file", "{files}/a-file"), ("surrogate", SURROGATE)],
                lambda v: [*mig, "--from-sqlite", v],
            ),
            missing=3,
        )
    )
    add(_rows("db migrate-to-postgres", "stores", CHOICES, lambda v: [*mig, "--store", v]))
    add(
        _rows(
            "db migrate-to-postgres",
            "report_path",
            [("directory", "{files}"), ("surrogate", SURROGATE)],
            lambda v: [*mig, "--report", v],
        )
    )
    add(_rows("db migrate-to-postgres", "on_nul", CHOICES, lambda v: [*mig, "--on-nul", v]))
    add(_rows("db migrate-to-postgres", "batch_size", INTS, lambda v: [*mig, "--batch-size", v]))
    add(_rows("db migrate-to-postgres", "workers", INTS, lambda v: [*mig, "--workers", v]))
    prune = ["db", "prune", "--dry-run"]
    add(_rows("db prune", "kinds", CHOICES, lambda v: [*prune, "--only", v]))
    for name in (
        "runs-days",
        "ingest-runs-days",
        "run-requests-days",
        "versions-days",
        "versions-keep",
        "batch-size",
    ):
        add(_rows("db prune", name.replace("-", "_"), INTS, lambda v, name=name: [*prune, f"--{name}", v]))
    # rollback and unlock: never --yes, and the value is refused before any confirmation
    add(_rows("db rollback", "store", CHOICES, lambda v: ["db", "rollback", "--store", v]))
    add(_rows("db rollback", "steps", INTS, lambda v: ["db", "rollback", "--store", "raw", "--steps", v]))
    add(_rows("db unlock", "store", CHOICES, lambda v: ["db", "unlock", "--store", v]))
    # export
    export = ["export", "--out", OUT]
    add(
        _with_exit(
            _rows(
                "export",
                "out_dir",
                [("under-a-file", "{files}/a-file/out"), ("1mb", "x" * MB), ("surrogate", SURROGATE)],
                lambda v: ["export", "--out", v],
            ),
            **{"under-a-file": 1, "1mb": 1},
        )
    )
    add(_rows("export", "channel", IDS, lambda v: [*export, "--channel", v]))
    add(_rows("export", "topic_id", IDS, lambda v: [*export, "--topic", v]))
    add(_rows("export", "since", DATES, lambda v: [*export, "--since", v]))
    add(_rows("export", "until", DATES, lambda v: [*export, "--until", v]))
    add(_rows("export", "jobs", [*INTS, ("zero", "0")], lambda v: [*export, "--jobs", v]))
    # ingest
    add(_rows("ingest", "source_ids", IDS, lambda v: ["ingest", "--source", v]))
    add(_rows("ingest", "limit", INTS, lambda v: ["ingest", "--all", "--limit", v]))
    files = [(name.split(".")[0], "{files}/" + name) for name in FILES if name != "a-file"]
    add(
        _rows(
            "ingest",
            "export_file",
            [
                *files,
                ("missing", "{files}/" + MISSING),
                ("under-a-file", "{files}/a-file/result.json"),
                ("surrogate", SURROGATE),
            ],
            lambda v: ["ingest", "--from-export", v],
        )
    )
    add(
        _rows(
            "ingest",
            "source_id",
            [("1mb", "x" * MB), ("surrogate", SURROGATE), ("without-export", "x")],
            lambda v: (
                ["ingest", "--source-id", v]
                if v == "x"
                else ["ingest", "--from-export", str(EXAMPLE), "--source-id", v]
            ),
        )
    )
    add(
        _rows(
            "ingest",
            "chat",
            [("unknown", UNKNOWN), ("surrogate", SURROGATE), ("1mb", "x" * MB)],
            lambda v: ["ingest", "--from-export", str(EXAMPLE), "--chat", v],
        )
    )
    # process, run, topicize, worker
    add(_rows("process", "source_id", IDS, lambda v: ["process", "--source", v]))
    add(_rows("process", "channel", IDS, lambda v: ["process", "--channel", v]))
    add(_rows("process", "concurrency", INTS, lambda v: ["process", "--concurrency", v]))
    add(_rows("process", "limit", INTS, lambda v: ["process", "--limit", v]))
    add(
        _rows(
            "process",
            "lease_seconds",
            [*INTS, ("nan", "nan"), ("inf", "inf")],
            lambda v: ["process", "--lease-seconds", v],
        )
    )
    add(_rows("process", "processor", CHOICES, lambda v: ["process", "--processor", v]))
    add(_rows("run", "source_ids", IDS, lambda v: ["run", "--out", OUT, "--source", v]))
    add(_rows("run", "out_dir", [("surrogate", SURROGATE)], lambda v: ["run", "--out", v]))
    intervals = [
        ("negative", "-5m"),
        ("too-short", "5s"),
        ("unit", "1x"),
        ("digits", "1" * MB),
        ("surrogate", SURROGATE),
    ]
    add(_rows("run", "every", intervals, lambda v: ["run", "--out", OUT, "--every", v]))
    add(_rows("run", "concurrency", INTS, lambda v: ["run", "--out", OUT, "--concurrency", v]))
    add(_rows("run", "processor", CHOICES, lambda v: ["run", "--out", OUT, "--processor", v]))
    add(_rows("topicize", "channel", IDS, lambda v: ["topicize", "--channel", v]))
    add(_rows("topicize", "processor", CHOICES, lambda v: ["topicize", "--processor", v]))
    add(_rows("worker", "out_dir", [("surrogate", SURROGATE)], lambda v: ["worker", "--once", "--out", v]))
    # runs
    add(_rows("runs list", "limit", INTS, lambda v: ["runs", "list", "--limit", v]))
    add(_rows("runs list", "status", CHOICES, lambda v: ["runs", "list", "--status", v]))
    add(_rows("runs list", "kind", CHOICES, lambda v: ["runs", "list", "--kind", v]))
    add(_rows("runs show", "run_id", IDS, lambda v: ["runs", "show", v]))
    # serve: every value is refused before anything listens
    hosts = [
        ("unknown", "no such host"),
        ("not-here", "192.0.2.1"),
        ("1mb", "x" * MB),
        ("surrogate", SURROGATE),
    ]
    add(
        _with_exit(
            _rows("serve", "host", hosts, lambda v: ["serve", "--host", v, "--port", str(CLOSED_PORT)]),
            **{"not-here": 3},
        )
    )
    add(_rows("serve", "port", [*INTS, ("zero", "0")], lambda v: ["serve", "--port", v]))
    add(_rows("serve", "workers", INTS, lambda v: ["serve", "--workers", v]))
    # sources
    add(
        _rows(
            "sources add",
            "channel",
            [v for v in IDS if v[0] != "unknown"] + [("empty", ""), ("link", "https://t.me/")],
            lambda v: ["sources", "add", v],
        )
    )
    add(
        _rows(
            "sources add",
            "source_id",
            [*TEXTS],
            # "kept " keeps the stored ids apart from the unknown ids the other rows must be refused
            lambda v: ["sources", "add", "@sweep_channel", "--id", "kept " + v],
            exit=0,
            stores=True,
        )
    )
    add(
        _rows(
            "sources add",
            "source_id",
            [("1mb", "x" * MB), ("surrogate", SURROGATE), ("blank", " ")],
            lambda v: ["sources", "add", "@sweep_channel", "--id", v],
        )
    )

    def titled(v):
        return [
            "sources",
            "add",
            "@sweep_channel",
            "--id",
            f"titled-{len(v)}-{ord(v[0])}",
            "--title",
            v,
        ]

    add(_rows("sources add", "title", [*TEXTS], titled, exit=0, stores=True))
    add(
        _rows(
            "sources add",
            "title",
            [("1mb", "x" * MB), ("surrogate", SURROGATE)],
            lambda v: ["sources", "add", "@sweep_channel", "--title", v],
        )
    )
    add(_rows("sources add", "since", DATES, lambda v: ["sources", "add", "@sweep_channel", "--since", v]))
    add(_rows("sources add", "until", DATES, lambda v: ["sources", "add", "@sweep_channel", "--until", v]))
    add(_rows("sources list", "status", CHOICES, lambda v: ["sources", "list", "--status", v]))
    for sub in ("pause", "resume"):
        add(_rows(f"sources {sub}", "source_id", IDS, lambda v, sub=sub: ["sources", sub, v]))
    add(_rows("sources remove", "source_id", IDS, lambda v: ["sources", "remove", "--yes", v]))
    # sql
    add(_rows("sql explain", "name", IDS, lambda v: ["sql", "explain", v]))
    params = [
        ("no-equals", "limit"),
        ("no-key", "=1"),
        ("huge", f"limit={10**30}"),
        ("unknown", "nosuch=1"),
        ("surrogate", f"source_id={SURROGATE}"),
    ]  # any other text is a fine value to explain a query with: it is not stored
    add(_rows("sql explain", "params", params, lambda v: ["sql", "explain", "sources_get", "-p", v]))
    add(_rows("sql list", "store", CHOICES, lambda v: ["sql", "list", "--store", v]))
    add(_rows("sql show", "name", IDS, lambda v: ["sql", "show", v]))
    # telegram: no Telegram application is configured, so a login stops there (exit 3) whatever the phone
    add(
        _with_exit(
            _rows(
                "telegram login",
                "phone",
                [*TEXTS, ("surrogate", SURROGATE)],
                lambda v: ["telegram", "login", "--phone", v],
            ),
            **{k: 3 for k, _ in TEXTS},
        )
    )
    # the environment: a database that refuses the connection, for every command
    for command, args in WHOLE_COMMANDS.items():
        rows.append(
            Cli(
                command,
                None,
                "dsn-refused",
                tuple(args),
                1 if command == "health" else 3,  # health reports the failed check (exit 1)
                (("DB_TYPE", "postgres"), ("DATABASE_URL", UNREACHABLE)),
            )
        )
    return rows


# Each command with values that are fine, for the environment rows (the database is what is wrong).
WHOLE_COMMANDS: dict[str, list[str]] = {
    "api-keys create": ["api-keys", "create", "sweep-new"],
    "api-keys list": ["api-keys", "list"],
    "api-keys revoke": ["api-keys", "revoke", "sweep-new"],
    "db check-orphans": ["db", "check-orphans"],
    "db checksum": ["db", "checksum"],
    "db migrate-to-postgres": ["db", "migrate-to-postgres", "--dry-run"],
    "db prune": ["db", "prune", "--dry-run"],
    "db rollback": ["db", "rollback", "--store", "raw", "--yes"],
    "db status": ["db", "status"],
    "db unlock": ["db", "unlock", "--store", "raw"],
    "db upgrade": ["db", "upgrade"],
    "export": ["export", "--out", OUT],
    "health": ["health"],
    "ingest": ["ingest", "--all"],
    "init": ["init"],
    "process": ["process", "--dry-run"],
    "run": ["run", "--out", OUT],
    "runs list": ["runs", "list"],
    "runs show": ["runs", "show", "x"],
    "serve": ["serve", "--port", str(CLOSED_PORT)],
    "sources add": ["sources", "add", "@sweep_channel"],
    "sources list": ["sources", "list"],
    "sources pause": ["sources", "pause", "x"],
    "sources remove": ["sources", "remove", "--yes", "x"],
    "sources resume": ["sources", "resume", "x"],
    "sql explain": ["sql", "explain", "sources_get"],
    "topicize": ["topicize"],
    "worker": ["worker", "--once", "--out", OUT],
}
# Commands that never open the database: the environment rows do not apply (the reason is given).
NO_DATABASE = {
    "version": "prints the version only",
    "sql list": "reads the .sql files only",
    "sql show": "reads the .sql files only",
    "telegram login": "talks to Telegram only (its rows above stop at the missing Telegram application)",
    "telegram status": "talks to Telegram only, and takes no value",
}

CLI_ROWS = _cli_table()


def _commands() -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}

    def walk(command: click.Command, path: list[str]) -> None:
        if isinstance(command, click.Group):
            ctx = click.Context(command)
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None
                walk(sub, [*path, name])
        else:
            found[" ".join(path)] = command

    walk(cli, [])
    return found


def _value_params(command: click.Command) -> set[str]:
    """The parameters that take a value (flags and --help do not)."""
    return {
        p.name
        for p in command.params
        if p.name and not (isinstance(p, click.Option) and (p.is_flag or p.count))
    }


def test_every_command_and_every_value_taking_parameter_has_rows() -> None:
    commands = _commands()
    wanted = {(name, param) for name, command in commands.items() for param in _value_params(command)}
    covered = {(row.command, row.param) for row in CLI_ROWS if row.param is not None}
    assert not wanted - covered, f"parameters without a row in the sweep: {sorted(wanted - covered)}"
    assert not covered - wanted, f"rows for parameters that do not exist: {sorted(covered - wanted)}"
    whole = {row.command for row in CLI_ROWS if row.param is None}
    assert set(commands) == whole | set(NO_DATABASE), (
        f"commands without an environment row: {sorted(set(commands) - whole - set(NO_DATABASE))}; "
        f"rows for no command: {sorted((whole | set(NO_DATABASE)) - set(commands))}"
    )
    stored = {(row.command, row.param) for row in CLI_ROWS if row.stores}
    assert stored == set(ACCEPTS_ANY_TEXT), "rows that store text must be declared in ACCEPTS_ANY_TEXT"
    ids = [row.id for row in CLI_ROWS]
    assert len(ids) == len(set(ids)), "row ids must be unique"


@pytest.fixture(scope="module")
def scratch(install: Install) -> Path:
    for name, make in FILES.items():
        if not (install.files / name).exists():
            make(install.files / name)
    return install.files


def _no_secret(text: str, *extra: str) -> None:
    for secret in (*SECRETS, *extra):
        assert secret not in text, f"a secret was printed: {secret!r}"


def check_cli_failure(stdout: str, stderr: str, exit_code: int, expected: int) -> None:
    """One error line (click's usage errors: their Usage and Try lines), no traceback, no secret."""
    assert exit_code == expected, (exit_code, stderr[-2000:], stdout[-500:])
    for text in (stdout, stderr):
        assert "Traceback" not in text and 'File "' not in text, text[-3000:]
        _no_secret(text)
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, stderr[-3000:]
    for line in stderr.splitlines():
        assert line.startswith(("Error:", "Usage:", "Try ", "processor: ")) or not line.strip(), (
            f"an extra line on stderr: {line[:300]!r}"
        )


@pytest.mark.parametrize("row", CLI_ROWS, ids=lambda row: row.id)
def test_cli_row(row: Cli, install: Install, scratch: Path) -> None:
    args = [a.replace("{files}", str(scratch)) for a in row.args]
    if row.stores:
        install.verify()  # the rows before this one changed nothing; this one may store its text
    install.running(row.id)
    result = CliRunner().invoke(cli, args, env=install.env(**dict(row.env)))
    if isinstance(result.exception, Exception) and not isinstance(result.exception, SystemExit):
        raise result.exception
    if row.stores:
        # Stored as given or refused in one line; never a traceback, and read back verbatim.
        assert "Traceback" not in result.output
        _no_secret(result.output)
        assert result.exit_code == 0, result.output[-2000:]
        listed = CliRunner().invoke(cli, ["sources", "list", "--json"], env=install.env())
        value = args[args.index("--id" if row.param == "source_id" else "--title") + 1]
        assert value in {
            s["source_id"] if row.param == "source_id" else s["title"] for s in json.loads(listed.stdout)
        }
        install.rebaseline()
        return
    if row.command == "health":  # a report of every check, the database's on one line, not an error
        assert result.exit_code == row.exit and "Traceback" not in result.output
        _no_secret(result.output)
        assert "database: FAIL  cannot connect to PostgreSQL" in result.output, result.output
    else:
        check_cli_failure(result.stdout, result.stderr, result.exit_code, row.exit)
    install.check_if_due()


# --- a few rows through a real process --------------------------------------------------------------------


def _process(install: Install, args: list[bytes | str], **env: str) -> subprocess.CompletedProcess[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL", "LOG_"))}
    full.update(install.env(**env))
    return subprocess.run(
        [sys.executable, "-m", "tg_parser", *args],
        env=full,
        cwd=install.files,
        capture_output=True,
        timeout=120,
        check=False,
    )


PROCESS_ROWS = [
    pytest.param(
        ["sources", "pause", b"caf\xe9"], {}, 2, "SOURCE_ID is not valid UTF-8 text", id="argv-not-utf8"
    ),
    pytest.param(["runs", "show", "x" * 100_000], {}, 2, "no run 'xxx", id="100kb-argument"),
    pytest.param(["ingest", "--from-export", "{files}/nul.json"], {}, 2, "nul.json", id="nul-in-a-file"),
    pytest.param(
        ["sources", "list"],
        {"DB_TYPE": "postgres", "DATABASE_URL": UNREACHABLE},
        3,
        "127.0.0.1",
        id="dsn-refused",
    ),
    pytest.param(
        ["sources", "list"],
        {"DB_TYPE": "postgres", "DATABASE_URL": f"postgresql://u:{DSN_PASSWORD}@[::1/db"},
        3,
        "DATABASE_URL",
        id="dsn-unparsable",
    ),
    pytest.param(
        ["db", "prune", "--dry-run"],
        {"PRUNE_RUNS_DAYS": str(10**30)},
        3,
        "PRUNE_RUNS_DAYS",
        id="huge-days-setting",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("args", "env", "code", "says"), PROCESS_ROWS)
def test_process_row(
    install: Install, scratch: Path, args: list[Any], env: dict[str, str], code: int, says: str
) -> None:
    if install.settings.db_type != "sqlite":
        pytest.skip("argv and environment handling is the same on both dialects: these processes run once")
    argv = [a.replace("{files}", str(scratch)) if isinstance(a, str) else a for a in args]
    install.running("process:" + " ".join(map(str, args))[:60])
    done = _process(install, argv, **env)
    stdout = done.stdout.decode("utf-8", "replace")
    stderr = done.stderr.decode("utf-8", "replace")
    check_cli_failure(stdout, stderr, done.returncode, code)
    assert says in stderr, stderr
    install.check_if_due()


# --- the API table ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Api:
    route: str  # "GET /api/v1/messages"
    param: str | None  # "query:since", "path:source_id", "body:title"; None: the route as a whole
    kind: str
    path: str  # with the query string, percent-encoded
    body: bytes | None = None
    allowed: frozenset[int] = frozenset({422})
    stores: bool = False

    @property
    def id(self) -> str:
        return f"{self.route}:{self.param or '-'}:{self.kind}"


def _q(text: str) -> str:
    """Percent-encoded; lone surrogates as the UTF-8 bytes of a surrogate (what a broken client sends)."""
    if text == SURROGATE:
        return "%ED%B3%BF"
    return quote(text, safe="")


API_TEXTS = [*TEXTS, ("nul", "a\x00b"), ("surrogate", SURROGATE), ("long", "x" * 600)]
API_IDS = [("unknown", UNKNOWN), *API_TEXTS]
API_DATES = [v for v in DATES if v[0] != "1mb"] + [("nul", "2025-01-01\x00")]
API_INTS = [*INTS, ("zero", "0")]
API_CHOICES = [("unknown", "nosuch"), ("nul", "a\x00b"), ("surrogate", SURROGATE)]
API_CURSORS = [
    ("garbage", "not-a-cursor"),
    ("nul", "\x00"),
    ("surrogate", SURROGATE),
    ("long", "x" * 1200),
    ("other-kind", "WyJ4IiwxXQ"),
]
QUERY_KINDS = {
    "channel": [*API_IDS, ("1mb", "x" * MB)],  # a megabyte request line: uvicorn's own 400
    "source": API_IDS,
    "topic": API_IDS,
    "since": API_DATES,
    "until": API_DATES,
    "limit": API_INTS,
    "cursor": API_CURSORS,
    "status": API_CHOICES,
}
# Filters that narrow a list: an unknown id (or odd but valid text) matches nothing, a 200 with no items.
FILTERS = {
    ("GET /api/v1/messages", "source"),
    ("GET /api/v1/documents", "source"),
    ("GET /api/v1/documents", "topic"),
}

# One valid body per POST route, and values for each of its fields.
BODIES: dict[str, dict[str, Any]] = {
    "POST /api/v1/sources": {"channel": "@sweep_channel"},
    "POST /api/v1/runs": {"steps": ["export"], "source": UNKNOWN},  # unknown source: never queued
    "POST /api/v1/keys": {"name": "sweep-api"},
}
RAW = object()  # a field value given as raw JSON text


def _json(value: Any) -> str:
    return json.dumps(value)


FIELD_VALUES: dict[tuple[str, str], list[tuple[str, Any]]] = {
    ("POST /api/v1/sources", "channel"): [
        *API_IDS[1:],
        ("number", 12345678),
        ("list", ["@durov"]),
        ("huge-id", str(10**30)),
    ],
    ("POST /api/v1/sources", "source_id"): [
        ("nul", "a\x00b"),
        ("surrogate", SURROGATE),
        ("long", "x" * 600),
        ("number", 5),
    ],
    ("POST /api/v1/sources", "title"): [
        ("nul", "a\x00b"),
        ("surrogate", SURROGATE),
        ("1mb", "x" * MB),
        ("list", []),
    ],
    ("POST /api/v1/sources", "comments"): [("text", "maybe"), ("number", 2)],
    ("POST /api/v1/sources", "since"): API_DATES,
    ("POST /api/v1/sources", "until"): API_DATES,
    ("POST /api/v1/runs", "steps"): [
        ("empty", []),
        ("unknown", ["nosuch"]),
        ("too-many", ["export"] * 5),
        ("text", "export"),
    ],
    ("POST /api/v1/runs", "source"): API_IDS,
    ("POST /api/v1/runs", "options"): [
        ("unknown", {"nosuch": 1}),
        ("negative", {"concurrency": -1}),
        ("huge", {"concurrency": 10**30}),
        ("text", "fast"),
    ],
    ("POST /api/v1/runs", "webhook_url"): [
        ("javascript", "javascript:alert(1)"),
        ("unclosed-ipv6", "http://[::1/x"),
        ("bad-port", "http://h:99999/"),
        ("nul", "http://h/\x00"),
        ("surrogate", f"http://{SURROGATE}/"),
        ("loopback", "http://127.0.0.1/hook"),
        ("3kb", "http://h/" + "x" * 3000),
    ],
    ("POST /api/v1/keys", "name"): [*API_TEXTS, ("empty", "")],
    ("POST /api/v1/keys", "scope"): API_CHOICES,
}
# Stored as given: the source's id and title (see ACCEPTS_ANY_TEXT).
API_STORES = {
    ("POST /api/v1/sources", "source_id"): "the source's id",
    ("POST /api/v1/sources", "title"): "its title",
}
STORED_TEXTS = set(API_STORES)


def _api_routes() -> dict[str, APIRoute]:
    from tg_parser.api.app import create_app

    app = create_app(sqlite_settings(Path("unused")))
    return {
        f"{method} {r.path}": r for r in app.routes if isinstance(r, APIRoute) for method in sorted(r.methods)
    }


def _route_params(route: APIRoute) -> set[str]:
    d = route.dependant
    names = {f"path:{p.name}" for p in d.path_params} | {f"query:{p.name}" for p in d.query_params}
    for body in d.body_params:
        names |= {f"body:{name}" for name in body.field_info.annotation.model_fields}
    return names


def _api_table() -> list[Api]:
    rows: list[Api] = []
    for name, route in _api_routes().items():
        method, template = name.split(" ", 1)
        rows.append(
            Api(
                name,
                None,
                "bad-key",
                template.replace("{", "").replace("}", ""),
                allowed=frozenset({401, 422} if method == "POST" else {401})
                if template.startswith("/api/")
                else frozenset({200, 503}),
            )
        )
        for param in sorted(_route_params(route)):
            where, pname = param.split(":")
            if where == "query":
                for kind, value in QUERY_KINDS[pname]:
                    allowed = (
                        {200, 422}
                        if (name, pname) in FILTERS
                        and kind in ("unknown", "quotes", "rtl-emoji", "surrogate")
                        else {400}
                        if kind == "1mb"
                        else {422}
                    )
                    rows.append(
                        Api(name, param, kind, f"{template}?{pname}={_q(value)}", allowed=frozenset(allowed))
                    )
            elif where == "path":
                for kind, value in API_IDS:
                    allowed = {404} if kind in ("unknown", "quotes", "rtl-emoji") else {404, 422}
                    rows.append(
                        Api(
                            name,
                            param,
                            kind,
                            template.replace("{" + pname + "}", _q(value)),
                            allowed=frozenset(allowed),
                        )
                    )
            else:
                base = BODIES[name]
                for kind, value in FIELD_VALUES[(name, pname)]:
                    body = json.dumps({**base, pname: value}).encode()
                    allowed = {413} if len(body) > 65_536 else {422}  # API_MAX_BODY_BYTES
                    rows.append(Api(name, param, kind, template, body, frozenset(allowed)))
                if (name, pname) in STORED_TEXTS:
                    for kind, value in TEXTS:  # "kept " keeps them apart from the unknown ids of other rows
                        body = json.dumps({**base, pname: "kept " + value}).encode()
                        rows.append(
                            Api(
                                name,
                                param,
                                f"stored-{kind}",
                                template,
                                body,
                                frozenset({200, 201}),
                                stores=True,
                            )
                        )
    return rows


API_ROWS = _api_table()


def test_every_route_and_every_parameter_has_rows() -> None:
    routes = _api_routes()
    wanted = {(name, param) for name, route in routes.items() for param in _route_params(route)}
    covered = {(row.route, row.param) for row in API_ROWS if row.param is not None}
    assert wanted == covered
    assert {row.route for row in API_ROWS if row.param is None} == set(routes)
    assert {(row.route, row.param.split(":")[1]) for row in API_ROWS if row.stores} == set(API_STORES)
    ids = [row.id for row in API_ROWS]
    assert len(ids) == len(set(ids)), "row ids must be unique"


@pytest.fixture(scope="module")
def api(install: Install) -> ThreadedApi:
    if install.api is None:
        generous = install.settings.model_copy(
            update={
                "api_rate_limit_read": 1_000_000,
                "api_rate_limit_write": 1_000_000,
                "webhook_secret": SecretStr(WEBHOOK_SECRET),
            }
        )
        install.api = ThreadedApi(generous).start()
    return install.api


@pytest.mark.parametrize("row", API_ROWS, ids=lambda row: row.id)
def test_api_row(row: Api, install: Install, api: ThreadedApi) -> None:
    client = api.client(install.token)
    if row.param is None:
        client = api.client("tgp_000000000000_" + "x" * 30)
    method = row.route.split(" ", 1)[0]
    if row.stores:
        install.verify()
    install.running(row.id)
    headers = {"Content-Type": "application/json"} if row.body is not None else None
    answer = client.request(method, row.path, body=row.body, headers=headers)
    assert answer.status in row.allowed, (answer.status, answer.body[:500])
    assert answer.status < 500
    text = answer.body.decode("utf-8", "replace")
    assert "Traceback" not in text and 'File "' not in text
    _no_secret(text, install.token)
    if answer.status >= 400 and answer.headers.get("content-type", "").startswith("application/json"):
        body = answer.json()
        assert set(body) == {"error", "request_id"} and set(body["error"]) == {"code", "message"}, body
        assert "\n" not in body["error"]["message"]
    if row.stores:
        install.rebaseline()
        return
    install.check_if_due()


# --- the same failures with LOG_FORMAT=json: every stderr line is a JSON log line, one of them the error ---

JSON_ROWS = [
    row
    for row in CLI_ROWS
    if row.param
    and (row.command, row.param)
    in {("export", "out_dir"), ("export", "since"), ("export", "channel"), ("db migrate-to-postgres", "dsn")}
]


@pytest.mark.parametrize("row", JSON_ROWS, ids=lambda row: row.id)
def test_cli_row_with_json_logs(row: Cli, install: Install, scratch: Path) -> None:
    args = [a.replace("{files}", str(scratch)) for a in row.args]
    install.running("json " + row.id)
    result = CliRunner().invoke(cli, args, env=install.env(**dict(row.env), LOG_FORMAT="json"))
    assert result.exit_code == row.exit, result.output[-2000:]
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert [line["level"] for line in lines].count("ERROR") == 1, result.stderr[-2000:]
    for text in (result.stdout, result.stderr):
        assert "Traceback" not in text
        _no_secret(text)
    install.check_if_due()
