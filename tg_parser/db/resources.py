"""Where the shipped `sql/` and `migrations/` folders are.

In a checkout (or an editable install) they sit at the top of the repository; in a wheel or a Docker
image they are carried inside the package as `tg_parser/_data/`. Either way the tool finds them.
"""

from __future__ import annotations

from pathlib import Path

STORES: tuple[str, ...] = ("ingestion", "raw", "processing")
DIALECTS: tuple[str, ...] = ("sqlite", "postgres")

_PACKAGE = Path(__file__).resolve().parent.parent


def _locate(name: str) -> Path:
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"the {name}/ folder is missing from the installation (looked beside {_PACKAGE})")


def sql_root() -> Path:
    return _locate("sql")


def migrations_root() -> Path:
    return _locate("migrations")


def migrations_dir(dialect: str, store: str) -> Path:
    return migrations_root() / dialect / store
