"""docs/SQL.md's query catalogue is generated from sql/ (scripts/sql_docs.py) and cannot drift from it."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "sql_docs.py"


def _sql_docs():
    spec = importlib.util.spec_from_file_location("sql_docs", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_sql_catalogue_matches_the_sql_folder() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


def test_catalogue_follows_a_changed_query_and_exception(tmp_path: Path) -> None:
    sql_docs = _sql_docs()
    root = tmp_path / "sql"
    shutil.copytree(ROOT / "sql", root)
    before = sql_docs.catalogue(root)
    assert before == sql_docs.catalogue()  # the same folder gives the same section
    path = root / "raw" / "messages.sql"
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace(
            "-- name: raw_list_versions\n",
            "-- name: raw_list_versions\n-- plan: sort-ok a reason only this test gives\n",
        ),
        encoding="utf-8",
    )
    after = sql_docs.catalogue(root)
    assert after != before
    assert "| `raw_list_versions` | sqlite, postgres | `sort-ok` | a reason only this test gives |" in after
    # The check reports the difference; render() puts the new section in place of the old one.
    document = (ROOT / "docs" / "SQL.md").read_text(encoding="utf-8")
    updated = sql_docs.render(document, after)
    assert updated != document and updated.count(sql_docs.BEGIN) == 1
    assert sql_docs.render(updated, before) == document
