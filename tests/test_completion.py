"""Shell completion (docs/USER_GUIDE.md): click's `_TG_PARSER_COMPLETE` protocol answers with commands,
subcommands, options and choices, reads no settings, and the generated bash script completes in bash."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def complete(words: str, cwd: Path, shell: str = "bash") -> list[str]:
    env = {**os.environ, "_TG_PARSER_COMPLETE": f"{shell}_complete", "COMP_WORDS": words}
    env["COMP_CWORD"] = str(len(words.split(" ")) - 1)
    proc = subprocess.run(
        [sys.executable, "-m", "tg_parser"], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return proc.stdout.splitlines()


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("tg-parser so", ["plain,sources"]),
        ("tg-parser sources pa", ["plain,pause"]),
        ("tg-parser db mi", ["plain,migrate-to-postgres"]),
        ("tg-parser db upgrade --store r", ["plain,raw"]),
        ("tg-parser process --processor ", ["plain,llm", "plain,extractive"]),
        ("tg-parser export --ou", ["plain,--out"]),
    ],
)
def test_completion_answers(tmp_path: Path, words: str, expected: list[str]) -> None:
    assert complete(words, tmp_path) == expected


def test_every_command_is_offered_even_with_a_broken_env_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DB_PORT=not-a-port\nLOG_FORMAT=json\n", encoding="utf-8")
    offered = {line.split(",", 1)[1] for line in complete("tg-parser ", tmp_path)}
    assert {"init", "ingest", "process", "topicize", "export", "run", "sources", "sql", "db"} <= offered


def test_the_bash_script_completes_in_bash(tmp_path: Path) -> None:
    bash, tool = shutil.which("bash"), BIN / "tg-parser"
    if bash is None or not tool.exists():
        pytest.skip("needs bash and the installed tg-parser script")
    script = subprocess.run(
        [str(tool)], env={**os.environ, "_TG_PARSER_COMPLETE": "bash_source"}, capture_output=True, text=True
    ).stdout
    assert "complete -o nosort -F _tg_parser_completion tg-parser" in script
    (tmp_path / "complete.bash").write_text(script, encoding="utf-8")
    probe = (
        ". ./complete.bash; COMP_WORDS=(tg-parser sources re); COMP_CWORD=2;"
        ' _tg_parser_completion tg-parser; echo "${COMPREPLY[*]}"'
    )
    proc = subprocess.run(
        [bash, "-c", probe],
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["remove", "resume"]
