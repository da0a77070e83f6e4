"""The PostgreSQL form of a named query (`:name` → `%(name)s`) is computed once per query and kept.

The rewrite scans the whole statement (tens to hundreds of microseconds for the longer ones), so the
executor must not redo it for every statement it runs; operator overrides are rewritten from their own
text like any other query.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tg_parser.config import Settings
from tg_parser.db import catalog as catalog_module
from tg_parser.db.catalog import SqlCatalog
from tg_parser.db.connect import open_database
from tg_parser.db.params import to_pyformat


@pytest.fixture
def rewrites(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts the rewrites the catalog's queries perform, by statement text."""
    counts: Counter[str] = Counter()

    def counting(sql: str) -> tuple[str, list[str]]:
        counts[sql] += 1
        return to_pyformat(sql)

    monkeypatch.setattr(catalog_module, "to_pyformat", counting)
    return counts


def test_pyformat_is_the_rewritten_text_of_every_shipped_query() -> None:
    for dialect in ("sqlite", "postgres"):
        for query in SqlCatalog.load(dialect):
            assert query.pyformat == to_pyformat(query.sql)[0], query.name


def test_pyformat_is_computed_once_per_query(rewrites: Counter[str]) -> None:
    query = SqlCatalog.load("postgres").get("raw_count_messages")
    assert rewrites[query.sql] == 0  # lazily: a SQLite install never pays for it
    first = query.pyformat
    assert query.pyformat is first and query.pyformat is first
    assert rewrites[query.sql] == 1


def test_the_postgres_executor_rewrites_each_query_once(
    pg_only_settings: Settings, rewrites: Counter[str]
) -> None:
    db = open_database(pg_only_settings)
    try:
        for _ in range(5):
            assert db.fetch_scalar("raw_count_messages", {"channel_id": None, "message_type": None}) == 0
            assert db.fetch_all("raw_channels") == []
            db.execute("processing_delete_failure", {"source_ref": "x"})
        db.execute_many("processing_delete_failure", [{"source_ref": f"x{i}"} for i in range(3)])
        assert list(db.stream("raw_channels")) == []
        for name in ("raw_count_messages", "raw_channels", "processing_delete_failure"):
            assert rewrites[db.catalog.get(name).sql] == 1, name
    finally:
        db.close()


def test_overrides_are_rewritten_too(
    pg_only_settings: Settings, tmp_path: Path, rewrites: Counter[str]
) -> None:
    over = tmp_path / "over" / "postgres"
    over.mkdir(parents=True)
    (over / "raw.sql").write_text(
        "-- name: raw_count_messages\n"
        "-- Operator's version: a literal % and the query's parameters.\n"
        "SELECT length('100%') * 1000 + COALESCE(CAST(:channel_id AS BIGINT), 7) AS n\n"
        "WHERE CAST(:message_type AS TEXT) IS NULL OR true\n",
        encoding="utf-8",
    )
    settings = pg_only_settings.model_copy(update={"tg_parser_sql_dir": over.parent})
    db = open_database(settings)
    try:
        query = db.catalog.get("raw_count_messages")
        assert query.origin == "override"
        assert "length('100%%')" in query.pyformat and "%(channel_id)s" in query.pyformat
        for _ in range(3):
            assert db.fetch_scalar("raw_count_messages", {"channel_id": None, "message_type": None}) == 4007
        assert db.fetch_scalar("raw_count_messages", {"channel_id": 5, "message_type": "post"}) == 4005
        assert rewrites[query.sql] == 1
    finally:
        db.close()
