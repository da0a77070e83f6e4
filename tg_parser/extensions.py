"""The migrator's optional C fast paths: the one-time notice after an install that could not build them.

`hatch_build.py` compiles `_jsonb.c` and `_copybin.c` at install time. When it cannot (no C compiler, no
Python headers) the install still succeeds, and pip hides the build's warning unless run with `-v`.
So the hook also writes the warning to `_build_warnings.txt` in the package, and the first command
run after the install logs it (one WARNING line per extension) and deletes the file: said once, where
the operator sees it. Where the file cannot be deleted (a read-only install), it is said at each run.
"""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path

from loguru import logger

BUILD_WARNINGS = Path(__file__).with_name("_build_warnings.txt")


def announce_build_warnings(path: Path | None = None) -> int:
    """Log the install's build warnings, if any, and forget them; returns how many lines were logged."""
    path = path or BUILD_WARNINGS
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:  # the usual case: everything was built (or the notice was given already)
        return 0
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        logger.bind(logger_name="tg_parser.install").warning(line)
    with suppress(OSError):
        path.unlink()
    return len(lines)
