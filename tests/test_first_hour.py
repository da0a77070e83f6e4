"""The first hour with the tool: what a new operator types first gives the documented answer.

Unknown ids given on the command line are bad input (exit 2), PostgreSQL without a URL says so in one
line (exit 3), DATABASE_URL query parameters reach libpq, and the licence and changelog exist.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import PG_HOST, PG_PORT, PG_USER

from tg_parser.cli.main import cli
from tg_parser.config import load_settings
from tg_parser.db.connect import open_database

ROOT = Path(__file__).resolve().parent.parent


def invoke(args: list[str], env: dict[str, str]):
    return CliRunner().invoke(cli, args, env=env)


def one_error_line(result) -> str:
    """The command printed exactly one line, an error, on stderr, and no traceback anywhere."""
    assert "Traceback" not in result.output, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


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
