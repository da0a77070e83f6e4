"""Build hook: compile the migrator's optional C fast paths.

* `tg_parser/transfer/_jsonb.c` prints canonical JSON about ten times faster than the Python reference
  in `canonical.py`;
* `tg_parser/transfer/_copybin.c` encodes a batch of rows for binary COPY (the twin of
  `rowcode.binary_encoder`).

The package falls back to the Python code when an extension is missing, so a failed compile is a
warning, not an error: a machine without a C compiler still installs a working (slower) tool. The compiler
is `CC` when set, else the one this Python was built with (`sysconfig`), as setuptools does.

pip shows a build backend's output only when the build fails (or with `-v`), so the warning is also
written to `tg_parser/_build_warnings.txt`, which the tool prints once, the first time it runs
(`tg_parser/extensions.py`), and then deletes. A later successful build removes a stale one.

Editable installs (`pip install -e .`) get the library next to the source, where the import finds it;
wheels carry it inside the package and are tagged for this interpreter and platform.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCES = [Path("tg_parser") / "transfer" / "_jsonb.c", Path("tg_parser") / "transfer" / "_copybin.c"]
# Read by tg_parser/extensions.py (BUILD_WARNINGS), which shows it once at the first run.
WARNINGS_FILE = Path("tg_parser") / "_build_warnings.txt"


def compile_command(source: Path, target: Path) -> list[str]:
    compiler = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    include = sysconfig.get_paths()["include"]
    return [*compiler, "-O2", "-shared", "-fPIC", f"-I{include}", str(source), "-o", str(target)]


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        warnings: list[str] = []
        for relative in SOURCES:
            source = Path(self.root) / relative
            target = source.with_name(source.stem + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))
            try:
                subprocess.run(compile_command(source, target), check=True, capture_output=True, text=True)
            except (OSError, subprocess.CalledProcessError) as exc:
                detail = " ".join((getattr(exc, "stderr", None) or str(exc)).split())
                warnings.append(
                    f"tg-parser: the C fast path {relative} was not compiled ({detail[:300] or 'no output'}); "
                    "the migrator uses its pure-Python path (same results, slower) — install a C compiler "
                    "and the Python headers, then reinstall tg-parser (pip install -e .)"
                )
                self.app.display_warning(warnings[-1])
                continue
            if version != "editable":
                build_data["pure_python"] = False
                build_data["infer_tag"] = True
                build_data["force_include"][str(target)] = str(relative.with_name(target.name))
        note = Path(self.root) / WARNINGS_FILE
        if not warnings:
            note.unlink(missing_ok=True)
            return
        note.write_text("\n".join(warnings) + "\n", encoding="utf-8")
        if version != "editable":
            build_data["force_include"][str(note)] = str(WARNINGS_FILE)
