"""An install that cannot compile the C fast paths says so where the operator sees it.

pip hides a build backend's output unless the build fails, so `hatch_build.py` also writes its warning
into the package (`tg_parser/_build_warnings.txt`); the first command run afterwards logs it once and
deletes it. The migrator itself says in one log line, at each run, that it runs its pure-Python path.
"""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import sys
import sysconfig
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import PG_HOST, PG_PORT, PG_USER
from loguru import logger

import tg_parser.extensions
from tg_parser.cli.main import cli
from tg_parser.extensions import announce_build_warnings
from tg_parser.transfer import canonical, rowcode

ROOT = Path(__file__).resolve().parent.parent
NOTE_LINE = "tg-parser: the C fast path tg_parser/transfer/_jsonb.c was not compiled (cc: not found); slower"


@pytest.fixture
def warnings_logged() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="WARNING")
    yield lines
    logger.remove(sink)


# --- the build hook -----------------------------------------------------------------------------------


class _App:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def display_warning(self, message: str) -> None:
        self.warnings.append(message)


def _load_hook(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """hatch_build.py with a stand-in for hatchling's base class (hatchling lives in pip's build
    environment, not in this one); the hook's own code runs unchanged, with the real compiler."""

    class BuildHookInterface:
        def __init__(self, root: str, app: _App) -> None:
            self.root, self.app = root, app

    interface = types.ModuleType("hatchling.builders.hooks.plugin.interface")
    interface.BuildHookInterface = BuildHookInterface  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "hatchling.builders.hooks.plugin.interface", interface)
    spec = importlib.util.spec_from_file_location("tgp_hatch_build", ROOT / "hatch_build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _source_tree(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "tg_parser" / "transfer").mkdir(parents=True)
    for name in ("_jsonb.c", "_copybin.c"):
        shutil.copy(ROOT / "tg_parser" / "transfer" / name, root / "tg_parser" / "transfer" / name)
    return root


@pytest.mark.parametrize("version", ["editable", "standard"])
def test_a_failed_compile_leaves_a_note_in_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    hook_module = _load_hook(monkeypatch)
    root = _source_tree(tmp_path)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    app = _App()
    build_data: dict[str, Any] = {"force_include": {}}
    hook_module.CustomBuildHook(str(root), app).initialize(version, build_data)

    note = root / "tg_parser" / "_build_warnings.txt"
    lines = note.read_text(encoding="utf-8").splitlines()
    assert lines == app.warnings and len(lines) == 2
    assert "_jsonb.c was not compiled" in lines[0] and "_copybin.c was not compiled" in lines[1]
    assert all("pure-Python" in line and "C compiler" in line for line in lines)
    if version == "editable":  # the package is the source tree: the note is already where it is read
        assert build_data["force_include"] == {}
    else:  # a wheel carries the note inside the package, and no library
        assert build_data["force_include"] == {str(note): "tg_parser/_build_warnings.txt"}
        assert "pure_python" not in build_data


def test_a_successful_compile_removes_a_stale_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
    if not compiler or shutil.which(compiler[0]) is None:
        pytest.skip("no C compiler")
    hook_module = _load_hook(monkeypatch)
    root = _source_tree(tmp_path)
    note = root / "tg_parser" / "_build_warnings.txt"
    note.write_text(NOTE_LINE + "\n", encoding="utf-8")
    monkeypatch.delenv("CC", raising=False)
    app = _App()
    hook_module.CustomBuildHook(str(root), app).initialize("editable", {"force_include": {}})
    assert app.warnings == [] and not note.exists()


# --- the first run after such an install --------------------------------------------------------------


def test_the_note_is_logged_once_and_forgotten(tmp_path: Path, warnings_logged: list[str]) -> None:
    note = tmp_path / "_build_warnings.txt"
    note.write_text(NOTE_LINE + "\n" + NOTE_LINE.replace("_jsonb", "_copybin") + "\n", encoding="utf-8")
    assert announce_build_warnings(note) == 2
    assert warnings_logged == [NOTE_LINE, NOTE_LINE.replace("_jsonb", "_copybin")]
    assert not note.exists()
    assert announce_build_warnings(note) == 0 and len(warnings_logged) == 2


def test_the_first_command_after_the_install_says_it(
    sqlite_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    note = tmp_path / "_build_warnings.txt"
    note.write_text(NOTE_LINE + "\n", encoding="utf-8")
    monkeypatch.setattr(tg_parser.extensions, "BUILD_WARNINGS", note)
    env = {"DB_TYPE": "sqlite", "DB_SQLITE_DIR": str(sqlite_dir)}
    first = CliRunner().invoke(cli, ["sources", "list"], env=env)
    assert first.exit_code == 0, first.output
    said = [line for line in first.stderr.splitlines() if "was not compiled" in line]
    assert len(said) == 1 and "WARNING" in said[0] and said[0].endswith(NOTE_LINE)
    second = CliRunner().invoke(cli, ["sources", "list"], env=env)
    assert second.exit_code == 0 and "was not compiled" not in second.stderr


def test_version_and_help_do_not_consume_the_note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """They read no settings and set up no logging: the note waits for a real command."""
    note = tmp_path / "_build_warnings.txt"
    note.write_text(NOTE_LINE + "\n", encoding="utf-8")
    monkeypatch.setattr(tg_parser.extensions, "BUILD_WARNINGS", note)
    for args in (["--help"], ["version"], ["db", "--help"]):
        assert CliRunner().invoke(cli, args).exit_code == 0
    assert note.exists()


# --- the migrator on the pure-Python path -------------------------------------------------------------


def test_the_migrator_says_once_that_it_runs_pure_python(
    sqlite_dir: Path, pg_dbname: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(canonical, "_jsonb", None)
    monkeypatch.setattr(rowcode, "_copybin", None)
    dsn = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{pg_dbname}"
    env = {"DB_TYPE": "sqlite", "DB_SQLITE_DIR": str(sqlite_dir)}
    result = CliRunner().invoke(
        cli, ["db", "migrate-to-postgres", "--to", dsn, "--dry-run", "--workers", "1"], env=env
    )
    assert result.exit_code == 0, result.output
    said = [line for line in result.stderr.splitlines() if "pure-Python" in line]
    assert len(said) == 1, result.stderr
    assert "WARNING" in said[0] and "_jsonb.c, _copybin.c" in said[0] and "C compiler" in said[0]


def test_the_migrator_is_quiet_with_its_c_fast_paths(sqlite_dir: Path, pg_dbname: str) -> None:
    if canonical._jsonb is None or rowcode._copybin is None:
        pytest.skip("the C fast paths are not built here")
    dsn = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{pg_dbname}"
    env = {"DB_TYPE": "sqlite", "DB_SQLITE_DIR": str(sqlite_dir)}
    result = CliRunner().invoke(
        cli, ["db", "migrate-to-postgres", "--to", dsn, "--dry-run", "--workers", "1"], env=env
    )
    assert result.exit_code == 0, result.output
    assert "pure-Python" not in result.stderr
