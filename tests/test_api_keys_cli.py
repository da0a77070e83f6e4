"""`tg-parser api-keys`: create, list and revoke keys from the command line, on both dialects.

The happy path of `create` as a process is in test_api_auth.py; here: the JSON forms, the table, the
empty list, revocation (and revoking what is not there), and the refusals (bad name, taken name), each
one clear line with exit code 2 and nothing written.
"""

from __future__ import annotations

import json

from click.testing import CliRunner
from support.cli import db_env

from tg_parser.api.keys import secret_matches, split
from tg_parser.cli.main import cli
from tg_parser.config import Settings
from tg_parser.db.connect import open_database
from tg_parser.errors import EXIT_USAGE
from tg_parser.stores.api import ApiStore


def run(settings: Settings, *args: str):
    return CliRunner().invoke(cli, ["api-keys", *args], env=db_env(settings))


def one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


def stored_keys(settings: Settings) -> list[dict]:
    db = open_database(settings)
    try:
        store = ApiStore(db)
        return [store.get_key(row["key_id"]) for row in store.list_keys()]
    finally:
        db.close()


def test_list_of_no_keys_says_how_to_make_one(settings):
    result = run(settings, "list")
    assert result.exit_code == 0, result.output
    assert "No API keys yet. Create one with: tg-parser api-keys create NAME" in result.output
    result = run(settings, "list", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == []


def test_create_json_gives_a_working_token_and_the_row_without_its_hash(settings):
    result = run(settings, "create", "dashboards", "--scope", "admin", "--json")
    assert result.exit_code == 0, result.output
    made = json.loads(result.output)
    assert made["key"]["name"] == "dashboards" and made["key"]["scope"] == "admin"
    assert "secret_hash" not in made["key"]
    key_id, secret = split(made["token"])
    assert made["key"]["key_id"] == key_id
    (row,) = stored_keys(settings)
    assert row["key_id"] == key_id
    assert secret_matches(secret, row["secret_hash"])  # the token shown is the one stored (hashed)
    assert secret not in repr(row)


def test_list_shows_every_key_never_a_secret_and_marks_revoked_ones(settings):
    tokens = {}
    for name, scope in (("reader", "read"), ("writer", "write")):
        made = run(settings, "create", name, "--scope", scope)
        assert made.exit_code == 0, made.output
        tokens[name] = made.stdout.strip()
        assert f"Created {scope} key {name!r}. This is the only time it is shown." in made.stderr
    result = run(settings, "revoke", "writer")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "Revoked writer"

    table = run(settings, "list")
    assert table.exit_code == 0, table.output
    lines = table.output.splitlines()
    assert lines[0].split() == ["name", "scope", "created_at", "revoked_at"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(rows) == {"reader", "writer"}
    assert len(rows["reader"]) == 3  # no revoked_at
    assert len(rows["writer"]) == 4 and rows["writer"][1] == "write"
    listed = run(settings, "list", "--json")
    assert listed.exit_code == 0, listed.output
    by_name = {row["name"]: row for row in json.loads(listed.output)}
    assert by_name["reader"]["revoked_at"] is None and by_name["writer"]["revoked_at"] is not None
    for token in tokens.values():
        _, secret = split(token)
        assert secret not in table.output and secret not in listed.output
    assert "secret_hash" not in listed.output


def test_revoking_a_key_that_is_not_active_is_refused(settings):
    result = run(settings, "revoke", "nobody")
    assert result.exit_code == EXIT_USAGE
    assert "no active key named 'nobody'" in one_error_line(result.output)
    assert "tg-parser api-keys list" in result.output
    assert run(settings, "create", "once").exit_code == 0
    assert run(settings, "revoke", "once").exit_code == 0
    again = run(settings, "revoke", "once")  # revoked already: not active any more
    assert again.exit_code == EXIT_USAGE
    assert "no active key named 'once'" in one_error_line(again.output)


def test_bad_and_taken_names_are_refused_and_write_nothing(settings):
    bad = run(settings, "create", "oops; DROP TABLE x")
    assert bad.exit_code == EXIT_USAGE
    assert "is not a key name" in one_error_line(bad.output)
    assert stored_keys(settings) == []
    assert run(settings, "create", "ci").exit_code == 0
    (first,) = stored_keys(settings)
    taken = run(settings, "create", "ci", "--scope", "admin")
    assert taken.exit_code == EXIT_USAGE
    assert "a key named 'ci' exists already" in one_error_line(taken.output)
    assert stored_keys(settings) == [first]  # the old key is untouched, no second one
    scope = run(settings, "create", "other", "--scope", "root")
    assert scope.exit_code == EXIT_USAGE  # click refuses the choice before anything runs
    assert "Traceback" not in scope.output
    assert stored_keys(settings) == [first]
