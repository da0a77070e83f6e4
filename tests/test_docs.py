"""The documentation stays true to the code: every setting is listed (with its real default) in
.env.example and docs/CONFIGURATION.md, every command shown in README.md and docs/ exists with the
options shown, and the indexes docs/SQL.md describes are the ones the migrations create."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from tg_parser.cli.main import cli
from tg_parser.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
ENV_EXAMPLE = ROOT / ".env.example"
CONFIGURATION = ROOT / "docs" / "CONFIGURATION.md"
SQL_DOC = ROOT / "docs" / "SQL.md"

FIELDS = {name.upper(): info for name, info in Settings.model_fields.items()}
_ENV_LINE = re.compile(r"^(?P<commented>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")
_TABLE_ROW = re.compile(r"^\|\s*`(?P<name>[A-Z][A-Z0-9_]*)`\s*\|\s*(?P<default>[^|]*?)\s*\|")


def env_example() -> dict[str, str | None]:
    """NAME -> value for `NAME=value` lines, None for commented `# NAME=` lines."""
    entries: dict[str, str | None] = {}
    for number, line in enumerate(ENV_EXAMPLE.read_text(encoding="utf-8").splitlines(), start=1):
        match = _ENV_LINE.match(line.strip())
        if match:
            name = match["name"]
            assert name not in entries, f".env.example:{number}: {name} is listed twice"
            entries[name] = None if match["commented"] else match["value"]
    return entries


def configuration_table() -> dict[str, str]:
    """NAME -> the default cell of its row in docs/CONFIGURATION.md's tables."""
    rows: dict[str, str] = {}
    for line in CONFIGURATION.read_text(encoding="utf-8").splitlines():
        match = _TABLE_ROW.match(line)
        if match:
            assert match["name"] not in rows, f"{match['name']} has two rows in CONFIGURATION.md"
            rows[match["name"]] = match["default"]
    return rows


# --- settings ---------------------------------------------------------------------------------------


def test_env_example_lists_every_setting_and_nothing_else() -> None:
    listed = env_example()
    assert sorted(set(FIELDS) - set(listed)) == [], "missing from .env.example"
    assert sorted(set(listed) - set(FIELDS)) == [], "unknown variables in .env.example"


def test_configuration_doc_lists_every_setting_and_nothing_else() -> None:
    rows = configuration_table()
    assert sorted(set(FIELDS) - set(rows)) == [], "missing from docs/CONFIGURATION.md"
    assert sorted(set(rows) - set(FIELDS)) == [], "unknown variables in docs/CONFIGURATION.md"


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_env_example_shows_the_real_default(name: str) -> None:
    """An active line must parse to the field's default; a commented one means the field has none."""
    value = env_example()[name]
    default = FIELDS[name].get_default(call_default_factory=True)
    if value is None:
        assert default is None, f"{name} has a default ({default!r}); write it as {name}=<default>"
        return
    parsed = getattr(load_settings(_env_file=None, **{name.lower(): value}), name.lower())
    if hasattr(parsed, "get_secret_value"):
        parsed = parsed.get_secret_value()
    assert parsed == default, f".env.example says {name}={value}, the default is {default!r}"


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_configuration_doc_default_matches_env_example(name: str) -> None:
    cell = configuration_table()[name]
    value = env_example()[name]
    if value is None:
        assert cell == "(unset)", f"CONFIGURATION.md shows {cell!r} as the default of {name}"
    else:
        assert cell == f"`{value}`", f"CONFIGURATION.md shows {cell!r}, .env.example {value!r} for {name}"


def test_env_example_loads_as_a_dotenv_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Copying .env.example to .env must give the defaults, not a start-up error."""
    (tmp_path / ".env").write_text(ENV_EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert load_settings() == load_settings(_env_file=None)


# --- commands shown in the documentation ------------------------------------------------------------

_FENCE = re.compile(r"^(```|~~~)")
_INLINE = re.compile(r"`([^`\n]+)`")
_START = re.compile(r"(?<![\w/.-])tg-parser(?![\w-])")
_TERMINATOR = re.compile(r"\s#|[;|&()`]")
_COMMAND_WORD = re.compile(r"^[a-z][a-z0-9-]*$")


def documentation_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def code_fragments(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of fenced code lines and inline code spans."""
    fragments: list[tuple[int, str]] = []
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if _FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if fenced:
            fragments.append((number, line))
        else:
            fragments.extend((number, span) for span in _INLINE.findall(line))
    return fragments


def invocations(path: Path) -> list[tuple[int, list[str]]]:
    """Every `tg-parser <command> ...` shown in code, as words. Output lines such as
    `tg-parser 0.1.0 on ...` are not invocations (the next word is not a command); a quoted invocation
    (`'tg-parser db upgrade'` in a message) ends at its closing quote."""
    found = []
    for number, text in code_fragments(path):
        for match in _START.finditer(text):
            start = match.end()
            quote = text[match.start() - 1] if match.start() > 0 else ""
            end = text.find(quote, start) if quote in ("'", '"') else -1
            segment = text[start : end if end != -1 else len(text)]
            segment = _TERMINATOR.split(segment, maxsplit=1)[0]
            try:
                words = shlex.split(segment)
            except ValueError:
                words = segment.split()
            if words and (_COMMAND_WORD.match(words[0]) or words[0].startswith("-")):
                found.append((number, words))
    return found


def _option_names(command: click.Command) -> set[str]:
    return {name for param in command.params for name in (*param.opts, *param.secondary_opts)}


def resolve(words: list[str]) -> str | None:
    """None if `tg-parser <words>` names real commands with real options, else what is wrong."""
    command: click.Command = cli
    path = ["tg-parser"]
    rest = list(words)
    while rest:
        word = rest[0].strip("[]")
        if word in ("...", "…"):  # `tg-parser sql …`: the group as a whole
            return None
        if word.startswith("-"):
            name = word.split("=", 1)[0]
            if name not in _option_names(command) and name not in ("-h", "--help"):
                return f"{' '.join(path)} has no option {name}"
            rest.pop(0)
            continue
        if isinstance(command, click.Group):
            sub = command.get_command(click.Context(command), word)  # the group loads commands lazily
            if sub is None:
                return f"{' '.join(path)} has no command {word!r}"
            command, path = sub, [*path, word]
            rest.pop(0)
            continue
        break  # arguments of a leaf command (a channel, a query name, a placeholder)
    for word in rest:  # options after the arguments
        name = word.strip("[]").split("=", 1)[0]
        if (
            name.startswith("-")
            and not re.fullmatch(r"-\d+", name)
            and name not in _option_names(command) | {"-h", "--help"}
        ):
            return f"{' '.join(path)} has no option {name}"
    if isinstance(command, click.Group) and command is not cli and not ({"-h", "--help"} & set(words)):
        return f"{' '.join(path)} needs a sub-command"
    return None


def test_the_scanner_finds_invocations_and_catches_wrong_ones(tmp_path: Path) -> None:
    sample = tmp_path / "sample.md"
    sample.write_text(
        "Run `tg-parser init` then `tg-parser health --json`.\n\n"
        "```bash\n"
        "DB_TYPE=postgres tg-parser db status   # comment\n"
        "tg-parser 0.1.0 on SQLite in data\n"
        "tg-parser sources add @x --comments; tg-parser sql list\n"
        "```\n"
        "Prose about tg-parser itself and tg-parser-migrate is not a command.\n",
        encoding="utf-8",
    )
    assert invocations(sample) == [
        (1, ["init"]),
        (1, ["health", "--json"]),
        (4, ["db", "status"]),
        (6, ["sources", "add", "@x", "--comments"]),
        (6, ["sql", "list"]),
    ]
    assert all(resolve(words) is None for _, words in invocations(sample))
    assert resolve(["frobnicate"]) == "tg-parser has no command 'frobnicate'"
    assert resolve(["db", "upgrde"]) == "tg-parser db has no command 'upgrde'"
    assert resolve(["db"]) == "tg-parser db needs a sub-command"
    assert resolve(["sources", "add", "@x", "--comment"]) == "tg-parser sources add has no option --comment"
    assert resolve(["--debug", "sql", "explain", "q", "-p", "a=1"]) is None
    assert resolve(["sql", "…"]) is None and resolve(["sorces", "…"]) is not None


@pytest.mark.parametrize("path", documentation_files(), ids=lambda p: p.name)
def test_commands_shown_in_the_docs_exist(path: Path) -> None:
    problems = [
        f"{path.name}:{number}: tg-parser {' '.join(words)} — {problem}"
        for number, words in invocations(path)
        if (problem := resolve(words)) is not None
    ]
    assert problems == []


def test_the_docs_show_the_foundation_commands() -> None:
    shown = {tuple(words[:2]) for path in documentation_files() for _, words in invocations(path)}
    shown |= {tuple(words[:1]) for path in documentation_files() for _, words in invocations(path)}
    for command in [
        ("init",),
        ("health",),
        ("db", "status"),
        ("db", "upgrade"),
        ("db", "rollback"),
        ("db", "unlock"),
        ("sources", "add"),
        ("sources", "list"),
        ("sql", "list"),
        ("sql", "show"),
        ("sql", "explain"),
    ]:
        assert command in shown, f"no documentation shows tg-parser {' '.join(command)}"


# --- SQL.md -----------------------------------------------------------------------------------------


def _migration_indexes(dialect: str) -> set[str]:
    """The indexes the migrations leave: created, less those a later migration drops."""
    names: set[str] = set()
    for path in sorted((ROOT / "migrations" / dialect).glob("*/*.sql"), key=lambda p: p.name):
        if path.name.endswith(".rollback.sql"):
            continue
        text = path.read_text(encoding="utf-8")
        names |= set(re.findall(r"CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", text, re.I))
        names -= set(re.findall(r"DROP\s+INDEX\s+(?:IF\s+EXISTS\s+)?(\w+)", text, re.I))
    return names


def test_sql_doc_index_table_matches_the_migrations() -> None:
    documented = set(re.findall(r"^\|[^|]*\|\s*`(\w+)`\s*\|", SQL_DOC.read_text(encoding="utf-8"), re.M))
    documented = {name for name in documented if name.endswith("_idx")}
    for dialect in ("sqlite", "postgres"):
        created = _migration_indexes(dialect)
        assert sorted(documented - created) == [], f"SQL.md names indexes {dialect} migrations lack"
        assert sorted(created - documented) == [], f"indexes of {dialect} migrations missing from SQL.md"


def test_docs_contain_no_machine_paths() -> None:
    for path in [*documentation_files(), ENV_EXAMPLE]:
        text = path.read_text(encoding="utf-8")
        for pattern in (r"/work/", r"/home/\w+", r"/root/", r"/tmp/pytest", r"C:\\Users"):
            assert not re.search(pattern, text), f"{path.name} contains a machine path ({pattern})"
