"""Build hook: compile the migrator's optional C fast path.

`tg_parser/transfer/_jsonb.c` prints canonical JSON about ten times faster than the Python reference in
`canonical.py`.

The package falls back to the Python code when the extension is missing, so a failed compile is a
warning, not an error: a machine without a C compiler still installs a working (slower) tool. The compiler and flags are the
ones this Python was built with (`sysconfig`), the same ones setuptools would use.

Editable installs (`pip install -e .`) get the library next to the source, where the import finds it;
wheels carry it inside the package and are tagged for this interpreter and platform.
"""

from __future__ import annotations

import shlex
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCES = [Path("tg_parser") / "transfer" / "_jsonb.c"]


def compile_command(source: Path, target: Path) -> list[str]:
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
    include = sysconfig.get_paths()["include"]
    return [*compiler, "-O2", "-shared", "-fPIC", f"-I{include}", str(source), "-o", str(target)]


class CustomBuildHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        for relative in SOURCES:
            source = Path(self.root) / relative
            target = source.with_name(source.stem + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))
            try:
                subprocess.run(compile_command(source, target), check=True, capture_output=True, text=True)
            except (OSError, subprocess.CalledProcessError) as exc:
                detail = getattr(exc, "stderr", None) or str(exc)
                self.app.display_warning(
                    f"tg-parser: the C fast path {relative} was not compiled ({detail.strip()[:300]}); "
                    "the migrator uses its pure-Python path (slower)"
                )
                continue
            if version != "editable":
                build_data["pure_python"] = False
                build_data["infer_tag"] = True
                build_data["force_include"][str(target)] = str(relative.with_name(target.name))
