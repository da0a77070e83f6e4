"""The first hour with the tool: what a new operator types first gives the documented answer.

Unknown ids given on the command line are bad input (exit 2), PostgreSQL without a URL says so in one
line (exit 3), DATABASE_URL query parameters reach libpq, and the licence and changelog exist.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import PG_HOST, PG_PORT, PG_USER
from support.cli import db_env

from tg_parser.cli.main import cli
from tg_parser.config import Settings, load_settings
from tg_parser.db.connect import open_database
from tg_parser.errors import EXIT_CONFIG, EXIT_USAGE

ROOT = Path(__file__).resolve().parent.parent


def invoke(args: list[str], env: dict[str, str]):
    return CliRunner().invoke(cli, args, env=env)


def one_error_line(result) -> str:
    """The command printed exactly one line, an error, on stderr, and no traceback anywhere."""
    assert "Traceback" not in result.output, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


# --- exit codes: an unknown id or name given by the user is bad input ---------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["sources", "pause", "NOPE"],
        ["sources", "resume", "NOPE"],
        ["sources", "remove", "NOPE", "--yes"],
        ["sql", "show", "NOPE"],
        ["sql", "explain", "NOPE"],
        ["ingest", "--source", "NOPE"],
        ["process", "--source", "NOPE"],
        ["run", "--source", "NOPE"],
        ["export", "--topic", "NOPE"],
        ["topicize", "--channel", "NOPE"],
    ],
    ids=lambda args: " ".join(args),
)
def test_an_unknown_id_or_name_is_bad_input(settings: Settings, tmp_path: Path, args: list[str]) -> None:
    if args[0] in ("run", "export"):
        args = [*args, "--out", str(tmp_path / "out")]
    result = invoke(args, db_env(settings))
    assert result.exit_code == EXIT_USAGE, result.output
    assert "NOPE" in one_error_line(result)


def test_the_exit_code_tables_agree_with_the_code() -> None:
    """Both documented tables put an unknown source id under 2, and none under 1."""
    guide = (ROOT / "docs" / "USER_GUIDE.md").read_text(encoding="utf-8")
    architecture = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for text in (guide, architecture):
        rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
        assert "unknown source id" in rows["2"]
        assert "unknown source" not in rows["1"]


# --- PostgreSQL without a URL -------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["init"], ["db", "status"], ["sources", "list"], ["export"]])
def test_postgres_without_database_url_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    result = invoke(args, {"DB_TYPE": "postgres"})
    assert result.exit_code == EXIT_CONFIG, result.output
    line = one_error_line(result)
    assert "DATABASE_URL is not set" in line and "set DATABASE_URL=postgresql://" in line
    assert not (tmp_path / "out").exists()


def test_migrate_to_postgres_without_a_target_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(["db", "migrate-to-postgres", "--dry-run"], {"DB_SQLITE_DIR": str(tmp_path)})
    assert result.exit_code == EXIT_CONFIG, result.output
    line = one_error_line(result)
    assert "DATABASE_URL is not set" in line and "--to" in line


def test_one_db_part_is_enough_to_choose_the_parts(pg_dbname: str) -> None:
    """DB_HOST & co. still work without DATABASE_URL (the defaults fill the parts not given)."""
    env = {"DB_TYPE": "postgres", "DB_HOST": PG_HOST, "DB_USER": PG_USER, "DB_NAME": pg_dbname}
    result = invoke(["db", "status"], env)
    assert result.exit_code == 0, result.output


# --- DATABASE_URL query parameters --------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "connect_timeout=5",
        "sslmode=disable",
        "application_name=tgp-first-hour",
        "connect_timeout=5&sslmode=disable&application_name=tgp-first-hour",
    ],
)
def test_database_url_query_parameters_work(pg_dbname: str, query: str) -> None:
    url = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{pg_dbname}?{query}"
    env = {"DB_TYPE": "postgres", "DATABASE_URL": url}
    for args in (["init"], ["db", "upgrade"], ["health"], ["sources", "add", "@first_hour"]):
        result = invoke(args, env)
        assert result.exit_code == 0, f"{args}: {result.output}"

    expected = dict(pair.split("=") for pair in query.split("&"))
    db = open_database(load_settings(_env_file=None, db_type="postgres", database_url=url))
    try:
        with db.pool.connection() as conn:  # what libpq was given, and what the server was told
            given = conn.info.get_parameters()
            name = conn.execute("SHOW application_name").fetchone()[0]
    finally:
        db.close()
    for key in ("connect_timeout", "sslmode"):
        if key in expected:
            assert given[key] == expected[key]
    assert name == expected.get("application_name", "tg-parser")


# --- the README's two set-up commands -----------------------------------------------------------------


def readme_set_up_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_readme_set_up_installs_into_an_activated_virtual_environment() -> None:
    commands = readme_set_up_commands()
    assert len(commands) == 2, commands  # the quick start, the tests
    for command in commands:
        steps = command.split(" && ")
        assert steps[:2] == ["python3 -m venv .venv", ". .venv/bin/activate"], command
        assert steps[2].startswith("python -m pip install -e "), command  # the venv's pip, never a bare one
        assert not any("python3 -m pip" in step or step.startswith("pip ") for step in steps), command
    assert commands[1].endswith("python -m pytest -q")


def test_readme_quick_start_runs_after_the_install(tmp_path: Path) -> None:
    """What follows the install in the README's first command, run as written by bash in a copy of the
    repository's examples, with this environment's tg-parser on PATH (as the activated venv would be)."""
    steps = readme_set_up_commands()[0].split(" && ")[3:]
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_URL", "LOG_", "OPENAI_"))
    }
    proc = subprocess.run(
        ["bash", "-c", " && ".join(steps)],
        env={**clean, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{clean.get('PATH', '')}"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Knowledge base: out/kb_entries.ndjson, out/topics.json" in proc.stdout
    assert (tmp_path / "out" / "kb_entries.ndjson").stat().st_size > 0


# --- licence and changelog ----------------------------------------------------------------------------


def test_licence_and_changelog() -> None:
    licence = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert licence.startswith("MIT License") and "tg-parser contributors" in licence
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'license = { text = "MIT" }' in pyproject
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert changelog.startswith("# Changelog") and "## [Unreleased]" in changelog
    assert "## [0.1.0]" in changelog and 'version = "0.1.0"' in pyproject
