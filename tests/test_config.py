"""Configuration (DESIGN.md §10): defaults, `.env`, validation naming the variable, DATABASE_URL vs DB_*
parts, and passwords with special characters kept intact from the environment to the server."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from click.testing import CliRunner
from conftest import PG_HOST, PG_PORT, PG_USER
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tg_parser.cli.main import cli
from tg_parser.config import load_settings
from tg_parser.db.connect import dialect_of, open_database, parse_database_url, pg_target
from tg_parser.errors import EXIT_CONFIG, ConfigError
from tg_parser.logging import redact, register_secrets
from tg_parser.stores import IngestionStore

SPECIAL_PASSWORD = "p@ss:w/rd%;'\""


@pytest.fixture(autouse=True)
def _empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory so no developer `.env` leaks in (Settings reads `.env` from the cwd)."""
    home = tmp_path / "cwd"
    home.mkdir()
    monkeypatch.chdir(home)
    return home


# --- defaults and sources ---------------------------------------------------------------------------


def test_defaults_with_no_environment_give_a_working_sqlite_setup() -> None:
    settings = load_settings()
    assert settings.db_type == "sqlite" and dialect_of(settings) == "sqlite"
    assert settings.db_sqlite_dir == Path("data")
    assert settings.database_url is None and settings.db_password is None
    assert settings.secrets() == []
    assert (settings.log_format, settings.log_level) == ("text", "INFO")
    assert settings.tg_parser_sql_dir is None
    assert (settings.db_host, settings.db_port, settings.db_name, settings.db_user) == (
        "localhost",
        5432,
        "tg_parser",
        "tg_parser",
    )
    with pytest.raises(ConfigError, match="DATABASE_URL is not set"):
        pg_target(settings)  # DB_TYPE=postgres alone: no URL, no parts, nothing to guess
    target = pg_target(load_settings(db_host="localhost"))  # one part given: the others' defaults apply
    assert (target.host, target.port, target.dbname, target.user, target.password) == (
        "localhost",
        5432,
        "tg_parser",
        "tg_parser",
        None,
    )
    assert target.options == {}


def test_dotenv_file_is_read_and_the_environment_wins(
    _empty_cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (_empty_cwd / ".env").write_text(
        "\n".join(
            [
                "# a comment",
                "DB_TYPE=POSTGRES",  # choices are case-insensitive
                "DB_PORT=6543",
                "db_host=db.internal",  # names are case-insensitive
                "LOG_FORMAT=json",
                "LOG_LEVEL=debug",
                'DB_PASSWORD="p@ss:w/rd%;\'\\""',  # python-dotenv escapes inside double quotes
                "TELEGRAM_API_ID=",  # empty means unset, as compose files produce
                "OPENAI_API_KEY=",
                "SOMETHING_ELSE=ignored",
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    settings = load_settings()
    assert settings.db_type == "postgres"
    assert settings.db_port == 6543 and settings.db_host == "db.internal"
    assert (settings.log_format, settings.log_level) == ("json", "DEBUG")
    assert settings.db_password is not None and settings.db_password.get_secret_value() == SPECIAL_PASSWORD
    assert settings.telegram_api_id is None and settings.openai_api_key is None

    monkeypatch.setenv("DB_PORT", "7000")
    assert load_settings().db_port == 7000
    # Explicit overrides (what tests and library callers pass) beat both.
    assert load_settings(db_port=7001).db_port == 7001
    # And `_env_file=None` ignores the file entirely.
    monkeypatch.delenv("DB_PORT")
    assert load_settings(_env_file=None).db_port == 5432


def test_secret_values_are_hidden_from_repr() -> None:
    settings = load_settings(db_password="hunter2-pw", openai_api_key="sk-abcdef123456")
    text = repr(settings) + str(settings) + str(settings.model_dump())
    assert "hunter2-pw" not in text and "sk-abcdef123456" not in text
    assert set(settings.secrets()) == {"hunter2-pw", "sk-abcdef123456"}


# --- invalid values ---------------------------------------------------------------------------------

INVALID = [
    ("DB_TYPE", "mysql"),
    ("DB_PORT", "abc"),
    ("DB_PORT", "0"),
    ("DB_PORT", "70000"),
    ("DB_POOL_MIN_SIZE", "-1"),
    ("DB_POOL_MAX_SIZE", "0"),
    ("DB_POOL_TIMEOUT", "0"),
    ("DB_POOL_TIMEOUT", "soon"),
    ("DB_POOL_MAX_IDLE", "-5"),
    ("DB_POOL_MAX_LIFETIME", "0"),
    ("DB_STATEMENT_TIMEOUT", "-1"),
    ("DB_CONNECT_TIMEOUT", "0"),
    ("DB_SQLITE_BUSY_TIMEOUT", "-1"),
    ("DB_DISABLE_PREPARED_STATEMENTS", "maybe"),
    ("LOG_FORMAT", "xml"),
    ("LOG_LEVEL", "verbose"),
    ("TELEGRAM_API_ID", "abc"),
    ("TELEGRAM_FLOOD_SLEEP_THRESHOLD", "-1"),
    ("INGEST_BATCH_SIZE", "0"),
    ("INGEST_BATCH_SIZE", "501"),
    ("LLM_API", "grpc"),
    ("LLM_REASONING_EFFORT", "extreme"),
    ("LLM_VERBOSITY", "chatty"),
    ("LLM_MAX_OUTPUT_TOKENS", "1"),
    ("LLM_TIMEOUT", "0"),
    ("LLM_MAX_RETRIES", "-1"),
    ("PROCESSOR", "magic"),
]


@pytest.mark.parametrize(("variable", "value"), INVALID)
def test_invalid_value_is_a_config_error_naming_the_variable(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = caught.value.one_line()
    assert variable in message
    # The offending value is shown (none of these is a secret); choices are case-normalised first.
    assert f"{value!r}".lower() in message.lower()
    assert "\n" not in message
    assert caught.value.exit_code == EXIT_CONFIG


def test_every_invalid_setting_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_PORT", "abc")
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "DB_PORT" in caught.value.message and "LOG_FORMAT" in caught.value.message


def test_pool_min_above_max_names_both_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_POOL_MIN_SIZE", "20")
    monkeypatch.setenv("DB_POOL_MAX_SIZE", "10")
    with pytest.raises(ConfigError, match=r"DB_POOL_MIN_SIZE \(20\) is larger than DB_POOL_MAX_SIZE \(10\)"):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value"), [("DB_TYPE", "mysql"), ("DB_PORT", "abc"), ("LOG_FORMAT", "xml")]
)
@pytest.mark.parametrize("args", [["health"], ["sources", "list"], ["db", "status"], ["init"]])
def test_cli_reports_an_invalid_setting_in_one_line_with_exit_3(
    variable: str, value: str, args: list[str], _empty_cwd: Path
) -> None:
    result = CliRunner().invoke(cli, args, env={variable: value}, prog_name="tg-parser")
    assert result.exit_code == EXIT_CONFIG, result.output
    assert isinstance(result.exception, SystemExit)  # handled, not a crash
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: invalid setting ")
    assert variable in lines[0] and "Traceback" not in result.output
    assert not (_empty_cwd / "data").exists()  # nothing was created on the way to the error


def test_a_real_process_with_a_bad_setting_prints_one_line_and_exits_3(_empty_cwd: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL", "LOG_"))}
    env["DB_PORT"] = "not-a-port"
    env["DB_TYPE"] = "postgres"
    proc = subprocess.run(
        [sys.executable, "-m", "tg_parser", "health"],
        env=env,
        cwd=_empty_cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == EXIT_CONFIG
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "DB_PORT" in proc.stderr and "Traceback" not in proc.stderr


def test_invalid_setting_in_dotenv_names_the_variable(_empty_cwd: Path) -> None:
    (_empty_cwd / ".env").write_text("DB_POOL_MAX_SIZE=lots\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="DB_POOL_MAX_SIZE"):
        load_settings()


# --- DATABASE_URL and DB_* parts --------------------------------------------------------------------


def test_db_parts_make_the_target() -> None:
    settings = load_settings(
        db_type="postgres",
        db_host="pg.example",
        db_port=6432,
        db_name="tgp",
        db_user="reader",
        db_password="pw-123",
        db_sslmode="require",
    )
    target = pg_target(settings)
    assert (target.host, target.port, target.dbname, target.user, target.password) == (
        "pg.example",
        6432,
        "tgp",
        "reader",
        "pw-123",
    )
    assert target.options == {"sslmode": "require"}
    assert target.connect_kwargs()["sslmode"] == "require"
    assert "pw-123" not in repr(target) and "pw-123" not in target.describe()


def test_database_url_wins_over_the_parts_and_is_percent_decoded() -> None:
    url = (
        f"postgresql://us%40er:{quote(SPECIAL_PASSWORD, safe='')}@db.example:6000/my%20db"
        "?sslmode=verify-full&application_name=x"
    )
    settings = load_settings(db_type="postgres", database_url=url, db_host="ignored", db_password="ignored")
    target = pg_target(settings)
    assert target.host == "db.example" and target.port == 6000
    assert target.user == "us@er" and target.dbname == "my db"
    assert target.password == SPECIAL_PASSWORD
    assert target.options == {"sslmode": "verify-full", "application_name": "x"}


@pytest.mark.parametrize(
    "url",
    ["postgres://u:p@h/db", "postgresql+psycopg://u:p@h/db", "POSTGRESQL://u:p@h/db"],
)
def test_database_url_schemes_accepted(url: str) -> None:
    target = parse_database_url(url)
    assert (target.user, target.password, target.host, target.port, target.dbname) == (
        "u",
        "p",
        "h",
        5432,
        "db",
    )


def test_database_url_with_a_wrong_scheme_or_port_is_a_config_error_without_the_password() -> None:
    for url, fragment in (
        ("mysql://bob:Sekr3t-pw@h/db", "DATABASE_URL must start with postgresql://"),
        ("postgresql://bob:Sekr3t-pw@h:99999/db", "DATABASE_URL has an invalid port"),
        ("bob:Sekr3t-pw@h/db", "DATABASE_URL must start with postgresql://"),
    ):
        with pytest.raises(ConfigError, match=fragment) as caught:
            pg_target(load_settings(db_type="postgres", database_url=url))
        assert "Sekr3t-pw" not in caught.value.one_line()


def test_cli_with_a_wrong_database_url_scheme_exits_3_without_the_password() -> None:
    result = CliRunner().invoke(
        cli,
        ["sources", "list"],
        env={"DB_TYPE": "postgres", "DATABASE_URL": "mysql://bob:Sekr3t-pw@127.0.0.1/db"},
    )
    assert result.exit_code == EXIT_CONFIG
    assert "DATABASE_URL" in result.stderr and "Sekr3t-pw" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


# --- passwords with special characters ---------------------------------------------------------------


def test_special_password_survives_env_url_and_conninfo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both ways of giving the password reach the driver's conninfo byte for byte."""
    monkeypatch.setenv("DB_TYPE", "postgres")
    monkeypatch.setenv("DB_PASSWORD", SPECIAL_PASSWORD)
    from_parts = pg_target(load_settings())
    monkeypatch.delenv("DB_PASSWORD")
    monkeypatch.setenv("DATABASE_URL", f"postgresql://bob:{quote(SPECIAL_PASSWORD, safe='')}@h:5432/db")
    from_url = pg_target(load_settings())
    for target in (from_parts, from_url):
        assert target.password == SPECIAL_PASSWORD
        conninfo = make_conninfo(**target.connect_kwargs())
        assert conninfo_to_dict(conninfo)["password"] == SPECIAL_PASSWORD


def test_password_inside_database_url_is_registered_as_a_secret() -> None:
    encoded = quote(SPECIAL_PASSWORD, safe="")
    settings = load_settings(db_type="postgres", database_url=f"postgresql://bob:{encoded}@h/db")
    secrets = settings.secrets()
    assert SPECIAL_PASSWORD in secrets and encoded in secrets
    register_secrets(secrets)
    leaked = f"auth failed for password {SPECIAL_PASSWORD} / conninfo password='{SPECIAL_PASSWORD}'"
    assert SPECIAL_PASSWORD not in redact(leaked)


def _auth_method_for_localhost(admin: psycopg.Connection, role: str) -> str | None:
    """What pg_hba.conf says for this role logging in over TCP from 127.0.0.1 (first matching line)."""
    rows = admin.execute(
        "SELECT user_name, address, netmask, auth_method FROM pg_hba_file_rules "
        "WHERE type IN ('host', 'hostnossl') AND error IS NULL ORDER BY line_number"
    ).fetchall()
    for users, address, netmask, method in rows:
        if not ({"all", role} & set(users or [])):
            continue
        if address in ("all", "samehost", "127.0.0.1"):
            return method
        try:
            network = ipaddress.ip_network(f"{address}/{netmask}" if netmask else address, strict=False)
        except ValueError:
            continue  # a host name: not ours
        if ipaddress.ip_address("127.0.0.1") in network:
            return method
    return None


@pytest.fixture
def special_role(pg_dbname: str) -> Iterator[tuple[str, str]]:
    """A login role whose password is SPECIAL_PASSWORD, allowed to use the test database; dropped after."""
    role = f"tgp_special_{os.getpid()}"

    def admin() -> psycopg.Connection:
        return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=pg_dbname, autocommit=True)

    with admin() as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(SPECIAL_PASSWORD)
            )
        )
    try:
        with admin() as conn:
            # `db status`/`db upgrade` run CREATE SCHEMA IF NOT EXISTS, which needs CREATE on the database.
            conn.execute(
                sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                    sql.Identifier(pg_dbname), sql.Identifier(role)
                )
            )
            for schema in ("ingestion", "raw", "processing"):
                for statement in (
                    "GRANT ALL ON SCHEMA {s} TO {r}",
                    "GRANT ALL ON ALL TABLES IN SCHEMA {s} TO {r}",
                    "GRANT ALL ON ALL SEQUENCES IN SCHEMA {s} TO {r}",
                ):
                    conn.execute(sql.SQL(statement).format(s=sql.Identifier(schema), r=sql.Identifier(role)))
            method = _auth_method_for_localhost(conn, role)
        yield role, method or "unknown"
    finally:
        with admin() as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [role])
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_special_password_works_against_real_postgres(special_role: tuple[str, str], pg_dbname: str) -> None:
    role, method = special_role
    encoded = quote(SPECIAL_PASSWORD, safe="")
    parts_env = {
        "DB_TYPE": "postgres",
        "DB_HOST": PG_HOST,
        "DB_PORT": str(PG_PORT),
        "DB_NAME": pg_dbname,
        "DB_USER": role,
        "DB_PASSWORD": SPECIAL_PASSWORD,
    }
    url_env = {
        "DB_TYPE": "postgres",
        "DATABASE_URL": f"postgresql://{role}:{encoded}@{PG_HOST}:{PG_PORT}/{pg_dbname}",
    }
    runner = CliRunner()
    for number, env in enumerate((parts_env, url_env)):
        for args in (
            ["health", "--json"],
            ["db", "status"],  # the yoyo path builds its own connection from the same parts
            ["sources", "add", f"@chan_special_{number}"],
            ["sources", "list"],
        ):
            result = runner.invoke(cli, args, env=env)
            assert result.exit_code == 0, (args, result.output)
            assert SPECIAL_PASSWORD not in result.output and encoded not in result.output
        health = runner.invoke(cli, ["health", "--json"], env=env)
        assert f"{role}@{PG_HOST}:{PG_PORT}" in health.stdout  # it really logged in as that role

    settings = load_settings(_env_file=None, **{k.lower(): v for k, v in parts_env.items()})
    db = open_database(settings)
    try:
        names = [s.source_id for s in IngestionStore(db).list_sources()]
    finally:
        db.close()
    assert names == ["chan_special_0", "chan_special_1"]

    wrong = {**parts_env, "DB_PASSWORD": "definitely-not-it"}
    result = runner.invoke(cli, ["sources", "list"], env=wrong)
    if method in ("md5", "scram-sha-256", "password"):
        # The server checks passwords: the special one was accepted above, a wrong one is refused.
        assert result.exit_code == EXIT_CONFIG
        assert f"{PG_HOST}:{PG_PORT}" in result.stderr and "password authentication failed" in result.stderr
        assert "definitely-not-it" not in result.output
    else:
        # pg_hba trusts this host (the test server does): a password is not checked, so the logins above
        # prove that the value travels through config, conninfo and yoyo without breaking anything; the
        # byte-exact wire check lives in test_logging (a server that asks for the password).
        assert method == "trust", method
        assert result.exit_code == 0
