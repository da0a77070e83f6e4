"""Every command's --help shows at least one example, and every example is a real invocation.

The walk covers the whole click tree (the root group, every group and every subcommand), so a new
command without an example fails here. An example is a help line that starts with `tg-parser` and the
command's full path (environment assignments such as `DB_TYPE=postgres` may come first). Each one must
name real commands and real options; two spaces or more end the example (a comment follows).
"""

from __future__ import annotations

import re
import shlex

import click
import pytest
from click.testing import CliRunner

from tg_parser.cli.main import cli
from tg_parser.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_LOCKED, EXIT_RATE_LIMITED, EXIT_USAGE


def command_paths() -> list[tuple[str, ...]]:
    """Every command path, from () for the root to ("db", "migrate-to-postgres")."""
    paths: list[tuple[str, ...]] = []

    def walk(command: click.Command, path: tuple[str, ...]) -> None:
        paths.append(path)
        if isinstance(command, click.Group):
            ctx = click.Context(command)
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None, f"{' '.join(path)} lists {name!r} but cannot load it"
                walk(sub, (*path, name))

    walk(cli, ())
    return paths


PATHS = command_paths()


def help_text(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(cli, [*path, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    return result.output


def examples(path: tuple[str, ...], text: str) -> list[list[str]]:
    start = re.compile(
        r"^\s*(?:[A-Z_]+=\S+\s+)*tg-parser" + "".join(rf"\s+{re.escape(w)}" for w in path) + r"(\s|$)"
    )
    found = []
    for line in text.splitlines():
        if start.match(line):
            invocation = re.split(r"\s{2,}", line.strip())[0]
            words = shlex.split(invocation)
            found.append(words[words.index("tg-parser") + 1 :])
    return found


def check_invocation(words: list[str]) -> None:
    """The words name commands down the tree, then only options of the last one (or values)."""
    command: click.Command = cli
    rest = list(words)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.get_command(click.Context(command), rest[0])
        assert sub is not None, f"no command {rest[0]!r} in {words}"
        command, rest = sub, rest[1:]
    options = {name for p in command.params for name in (*p.opts, *p.secondary_opts)}
    for word in rest:
        if word.startswith("-") and not re.fullmatch(r"-\d+|\+\d+", word):
            assert word.split("=", 1)[0] in options, f"{word} is not an option of {words}"


def test_the_walk_sees_every_command() -> None:
    names = {" ".join(path) for path in PATHS}
    assert {"", "init", "sources add", "db migrate-to-postgres", "sql explain", "telegram login"} <= names
    assert len(PATHS) >= 25


@pytest.mark.parametrize("path", PATHS, ids=lambda path: " ".join(path) or "tg-parser")
def test_every_help_shows_a_real_example(path: tuple[str, ...]) -> None:
    found = examples(path, help_text(path))
    assert found, f"'tg-parser {' '.join(path)} --help' shows no example"
    for words in found:
        check_invocation(words)


def test_root_help_lists_the_exit_codes() -> None:
    text = help_text(())
    assert "Exit codes" in text
    for code in (0, EXIT_FAILURE, EXIT_USAGE, EXIT_CONFIG, EXIT_LOCKED, EXIT_RATE_LIMITED):
        assert re.search(rf"^\s+{code}\s+\S", text, re.M), f"exit code {code} is not listed"
