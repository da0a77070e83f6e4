"""The migrator's C extension is built by the install and is not older than its source.

It is optional at run time (the Python code stands in), so nothing else fails when it is missing or
stale; this test does, with what to run. It skips only where no C compiler exists.
"""

from __future__ import annotations

import importlib
import shlex
import shutil
import sysconfig
from pathlib import Path

import pytest

import tg_parser.transfer


@pytest.mark.parametrize(("extension", "user"), [("_jsonb", "tg_parser.transfer.canonical")])
def test_extension_is_built_and_current(extension: str, user: str) -> None:
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
    if not compiler or shutil.which(compiler[0]) is None:
        pytest.skip(f"no C compiler: {user} runs its Python code instead of {extension}")
    hint = "rebuild the C extension with `pip install -e .`"
    try:
        module = importlib.import_module(f"tg_parser.transfer.{extension}")
    except ImportError:
        pytest.fail(f"tg_parser.transfer.{extension} does not import; {hint}")
    assert getattr(importlib.import_module(user), extension) is module, f"{user} does not use {extension}"
    source = Path(tg_parser.transfer.__file__).with_name(f"{extension}.c")
    library = Path(module.__file__)
    assert library.stat().st_mtime >= source.stat().st_mtime, (
        f"{library.name} is older than {source.name}; {hint}"
    )
