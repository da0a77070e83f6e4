"""The named-SQL catalog: parsing, dialect folders, operator overrides, errors, and the shipped sql/ itself.

The last part prepares every shipped query on a real PostgreSQL (PREPARE parses and type-checks it
against the migrated schema) and on SQLite (EXPLAIN QUERY PLAN), so a typo in any `.sql` file fails here.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import psycopg
import pytest

from tg_parser.config import Settings, load_settings
from tg_parser.db.catalog import SqlCatalog, parse_sql_file
from tg_parser.db.connect import load_catalog, open_database, pg_target
from tg_parser.db.params import parameter_names, to_pyformat
from tg_parser.db.resources import DIALECTS, STORES, sql_root
from tg_parser.errors import QueryNotFound, SqlCatalogError

# --- helpers ----------------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A small catalog: one portable query overridden for postgres, and two portable-only ones."""
    base = tmp_path / "sql"
    write(
        base / "raw" / "q.sql",
        "-- a file comment before the first header is allowed\n"
        "\n"
        "-- name: raw_pick\n"
        "-- Pick one message.\n"
        "-- Served by: raw_messages primary key.\n"
        "SELECT 'portable' AS origin;\n"
        "\n"
        "-- name: raw_count\n"
        "-- Count them.\n"
        "-- Served by: a full scan.\n"
        "SELECT 1 AS n\n"
        "  -- a comment inside the statement stays in the SQL\n"
        "  , 2 AS m;;\n",
    )
    write(
        base / "raw" / "postgres" / "q.sql",
        "-- name: raw_pick\n-- Pick one message (postgres flavour).\n-- Served by: pkey.\nSELECT 'postgres' AS origin;\n",
    )
    write(
        base / "ingestion" / "s.sql",
        "-- name: sources_probe\n-- Probe.\n-- Served by: nothing.\nSELECT :a AS a, :b AS b, :a AS again;\n",
    )
    return base


# --- parsing ----------------------------------------------------------------------------------------


def test_blocks_doc_and_sql_are_split(root: Path) -> None:
    queries = {q.name: q for q in parse_sql_file(root / "raw" / "q.sql", "raw", "portable")}
    assert list(queries) == ["raw_pick", "raw_count"]
    pick = queries["raw_pick"]
    assert pick.doc == "Pick one message.\nServed by: raw_messages primary key."
    assert pick.sql == "SELECT 'portable' AS origin"
    assert pick.line == 3
    assert pick.location.endswith("q.sql:3")
    count = queries["raw_count"]
    # trailing semicolons go; comments inside the statement stay, as part of the SQL
    assert count.sql == "SELECT 1 AS n\n  -- a comment inside the statement stays in the SQL\n  , 2 AS m"
    assert count.doc == "Count them.\nServed by: a full scan."


def test_dialect_folder_overrides_portable(root: Path) -> None:
    pg = SqlCatalog.load("postgres", root=root)
    lite = SqlCatalog.load("sqlite", root=root)
    assert pg.get("raw_pick").sql == "SELECT 'postgres' AS origin"
    assert pg.get("raw_pick").origin == "postgres"
    assert pg.get("raw_pick").doc.startswith("Pick one message (postgres flavour).")
    assert lite.get("raw_pick").sql == "SELECT 'portable' AS origin"
    assert lite.get("raw_pick").origin == "portable"
    assert {q.name for q in pg} == {q.name for q in lite} == {"raw_pick", "raw_count", "sources_probe"}
    assert pg.get("sources_probe").store == "ingestion"
    assert pg.get("raw_count").store == "raw"
    assert "raw_pick" in pg and "nope" not in pg and len(pg) == 3


def test_dialect_folder_overrides_run_for_real(root: Path, tmp_path: Path) -> None:
    from tg_parser.db.sqlite import SqliteDatabase

    with SqliteDatabase(tmp_path / "data", SqlCatalog.load("sqlite", root=root), create=True) as db:
        assert db.fetch_scalar("raw_pick") == "portable"
        assert db.fetch_one("sources_probe", {"a": 1, "b": "x"}) == {"a": 1, "b": "x", "again": 1}


def test_sql_before_first_header_is_an_error(tmp_path: Path) -> None:
    bad = write(tmp_path / "sql" / "raw" / "bad.sql", "-- ok comment\nSELECT 1;\n-- name: raw_x\nSELECT 2;\n")
    with pytest.raises(SqlCatalogError) as info:
        SqlCatalog.load("sqlite", root=tmp_path / "sql")
    assert f"{bad}:2" in info.value.message
    assert "before the first '-- name:' header" in info.value.message


def test_empty_block_is_an_error(tmp_path: Path) -> None:
    bad = write(
        tmp_path / "sql" / "raw" / "bad.sql",
        "-- name: raw_empty\n-- Only documentation, no statement.\n;\n\n-- name: raw_ok\nSELECT 1;\n",
    )
    with pytest.raises(SqlCatalogError) as info:
        SqlCatalog.load("sqlite", root=tmp_path / "sql")
    assert f"{bad}:1" in info.value.message and "'raw_empty' has no SQL" in info.value.message


def test_example_and_plan_lines_are_parsed(tmp_path: Path) -> None:
    write(
        tmp_path / "sql" / "raw" / "q.sql",
        "-- name: raw_pick\n"
        "-- Pick messages.\n"
        "-- example: channel_id=1500000001 text='a value' since=2025-01-01 refs='[\"tg:1:post:1\"]'\n"
        "-- plan: seqscan-ok a full read is the point\n"
        "SELECT * FROM raw.raw_messages WHERE channel_id = :channel_id AND text = :text\n"
        "  AND date >= :since AND source_ref IN (SELECT value FROM json_each(:refs));\n"
        "-- name: raw_none\n-- No parameters, no example.\nSELECT 1;\n",
    )
    catalog = SqlCatalog.load("sqlite", root=tmp_path / "sql")
    query = catalog.get("raw_pick")
    assert query.example == {
        "channel_id": "1500000001",
        "text": "a value",
        "since": "2025-01-01",
        "refs": '["tg:1:post:1"]',
    }
    assert query.plan_exceptions == {"seqscan-ok": "a full read is the point"}
    assert catalog.get("raw_none").example is None and catalog.get("raw_none").plan_exceptions == {}


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("-- example: channel_id", "'channel_id' in '-- example:' is not key=value"),
        ("-- example: text='unclosed", "unreadable '-- example:' line"),
        ("-- example: a=1\n-- example: b=2", "two '-- example:' lines"),
        ("-- plan: seqscan-ok", "is not a plan exception"),
        ("-- plan: scan-fine because", "'-- plan: scan-fine because' is not a plan exception"),
    ],
)
def test_malformed_example_or_plan_line_is_an_error(tmp_path: Path, header: str, message: str) -> None:
    bad = write(tmp_path / "sql" / "raw" / "bad.sql", f"-- name: raw_x\n{header}\nSELECT :a, :b;\n")
    with pytest.raises(SqlCatalogError) as info:
        SqlCatalog.load("sqlite", root=tmp_path / "sql")
    assert f"{bad}:1" in info.value.message and message in info.value.message


def test_invalid_name_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "sql" / "raw" / "bad.sql", "-- name: Raw-Thing\nSELECT 1;\n")
    with pytest.raises(SqlCatalogError, match="invalid query name 'Raw-Thing'"):
        SqlCatalog.load("sqlite", root=tmp_path / "sql")


def test_duplicate_name_in_one_folder_names_both_places(tmp_path: Path) -> None:
    first = write(tmp_path / "sql" / "raw" / "a.sql", "-- name: raw_dup\nSELECT 1;\n")
    second = write(
        tmp_path / "sql" / "raw" / "b.sql", "-- name: raw_other\nSELECT 2;\n\n-- name: raw_dup\nSELECT 3;\n"
    )
    with pytest.raises(SqlCatalogError) as info:
        SqlCatalog.load("postgres", root=tmp_path / "sql")
    message = info.value.message
    assert "duplicate query name 'raw_dup'" in message
    assert f"{first}:1" in message and f"{second}:4" in message


def test_duplicate_name_within_one_file(tmp_path: Path) -> None:
    path = write(
        tmp_path / "sql" / "raw" / "a.sql", "-- name: raw_dup\nSELECT 1;\n-- name: raw_dup\nSELECT 2;\n"
    )
    with pytest.raises(SqlCatalogError) as info:
        SqlCatalog.load("sqlite", root=tmp_path / "sql")
    assert f"{path}:1" in info.value.message and f"{path}:3" in info.value.message


def test_same_name_in_two_stores_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "sql" / "raw" / "a.sql", "-- name: shared_name\nSELECT 1;\n")
    write(tmp_path / "sql" / "processing" / "a.sql", "-- name: shared_name\nSELECT 2;\n")
    with pytest.raises(SqlCatalogError, match="used by two stores"):
        SqlCatalog.load("sqlite", root=tmp_path / "sql")


def test_unknown_dialect(tmp_path: Path) -> None:
    with pytest.raises(SqlCatalogError, match="unknown dialect 'mysql'"):
        SqlCatalog.load("mysql", root=tmp_path)


def test_unknown_name_lists_close_names() -> None:
    catalog = SqlCatalog.load("sqlite")
    with pytest.raises(QueryNotFound) as info:
        catalog.get("sources_gett")
    assert "unknown query 'sources_gett'" in info.value.message
    assert "sources_get" in info.value.message
    assert "tg-parser sql list" in (info.value.hint or "")
    with pytest.raises(QueryNotFound) as info:
        catalog.get("zzzz_qqqq")
    assert "did you mean" not in info.value.message  # nothing close: no misleading suggestions


# --- TG_PARSER_SQL_DIR overrides ---------------------------------------------------------------------


def test_override_replaces_sql_and_keeps_store_and_doc(root: Path, tmp_path: Path) -> None:
    over = tmp_path / "over"
    write(over / "mine.sql", "-- name: raw_count\nSELECT 42 AS n;\n")
    catalog = SqlCatalog.load("sqlite", override_dir=over, root=root)
    query = catalog.get("raw_count")
    assert query.sql == "SELECT 42 AS n"
    assert query.origin == "override"
    assert query.store == "raw"
    assert query.doc.startswith("Count them.")  # an override without a doc keeps the shipped one
    assert query.path == over / "mine.sql"
    assert catalog.get("raw_pick").origin == "portable"  # the rest is untouched


def test_override_folder_of_the_other_dialect_is_not_read(root: Path, tmp_path: Path) -> None:
    over = tmp_path / "over"
    write(over / "postgres" / "pg_only.sql", "-- name: only_in_pg_override\nSELECT 1;\n")
    lite = SqlCatalog.load("sqlite", override_dir=over, root=root)  # the postgres folder is skipped
    assert "only_in_pg_override" not in lite
    with pytest.raises(SqlCatalogError, match="unknown query 'only_in_pg_override'"):
        SqlCatalog.load("postgres", override_dir=over, root=root)


def test_override_dialect_subfolder_wins(root: Path, tmp_path: Path) -> None:
    over = tmp_path / "over"
    write(
        over / "zz_generic.sql",
        "-- name: raw_pick\n-- Operator's generic version.\nSELECT 'generic' AS origin;\n",
    )
    write(over / "postgres" / "aa.sql", "-- name: raw_pick\nSELECT 'override-pg' AS origin;\n")
    write(over / "sqlite" / "aa.sql", "-- name: raw_count\nSELECT 'override-sqlite' AS n;\n")
    pg = SqlCatalog.load("postgres", override_dir=over, root=root)
    assert pg.get("raw_pick").sql == "SELECT 'override-pg' AS origin"  # dialect folder beats generic file
    assert pg.get("raw_count").origin == "portable"  # the sqlite folder is not applied to postgres
    lite = SqlCatalog.load("sqlite", override_dir=over, root=root)
    assert lite.get("raw_pick").sql == "SELECT 'generic' AS origin"
    assert lite.get("raw_pick").doc == "Operator's generic version."
    assert lite.get("raw_count").sql == "SELECT 'override-sqlite' AS n"


def test_override_of_unknown_name_is_an_error(root: Path, tmp_path: Path) -> None:
    over = tmp_path / "over"
    path = write(over / "typo.sql", "-- name: raw_pik\nSELECT 1;\n")
    with pytest.raises(SqlCatalogError) as info:
        SqlCatalog.load("sqlite", override_dir=over, root=root)
    assert f"{path}:1" in info.value.message
    assert "unknown query 'raw_pik'" in info.value.message and "raw_pick" in info.value.message


def test_override_duplicate_in_one_folder_is_an_error(root: Path, tmp_path: Path) -> None:
    over = tmp_path / "over"
    write(over / "a.sql", "-- name: raw_pick\nSELECT 1;\n")
    write(over / "b.sql", "-- name: raw_pick\nSELECT 2;\n")
    with pytest.raises(SqlCatalogError, match="duplicate query name 'raw_pick'"):
        SqlCatalog.load("sqlite", override_dir=over, root=root)


def test_override_dir_must_exist(root: Path, tmp_path: Path) -> None:
    with pytest.raises(SqlCatalogError, match="is not a directory"):
        SqlCatalog.load("sqlite", override_dir=tmp_path / "missing", root=root)


def test_override_dir_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    over = tmp_path / "over"
    write(over / "sqlite" / "mine.sql", "-- name: sources_list\nSELECT 'env' AS source_id;\n")
    monkeypatch.setenv("TG_PARSER_SQL_DIR", str(over))
    configured = load_settings(_env_file=None)
    assert configured.tg_parser_sql_dir == over
    assert load_catalog(configured, "sqlite").get("sources_list").sql == "SELECT 'env' AS source_id"
    assert load_catalog(configured, "postgres").get("sources_list").origin == "portable"


def test_override_through_settings_runs_on_both_dialects(settings: Settings, tmp_path: Path) -> None:
    # TG_PARSER_SQL_DIR as an operator uses it: the override is what the executor runs.
    over = tmp_path / "over"
    write(over / "raw.sql", "-- name: raw_count_messages\n-- Operator's version.\nSELECT 4242 AS n;\n")
    configured = settings.model_copy(update={"tg_parser_sql_dir": over})
    assert load_catalog(configured).get("raw_count_messages").origin == "override"
    db = open_database(configured)
    try:
        assert db.fetch_scalar("raw_count_messages", {"channel_id": None, "message_type": None}) == 4242
    finally:
        db.close()


# --- the shipped catalog ----------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_shipped_catalog_loads(dialect: str) -> None:
    catalog = SqlCatalog.load(dialect)
    assert len(catalog) > 20
    assert {q.store for q in catalog} == set(STORES)


def test_shipped_names_are_the_same_on_both_dialects() -> None:
    names = {d: {q.name for q in SqlCatalog.load(d)} for d in DIALECTS}
    assert names["sqlite"] == names["postgres"], names["sqlite"] ^ names["postgres"]


def test_dialect_variants_agree_on_parameter_names() -> None:
    # A caller passes the same parameters whatever the dialect. A variant may leave one unused (extra
    # keys are ignored on both dialects), but a renamed one would be missing on the other dialect.
    lite = {q.name: q for q in SqlCatalog.load("sqlite")}
    for query in SqlCatalog.load("postgres"):
        pg_names, lite_names = set(parameter_names(query.sql)), set(parameter_names(lite[query.name].sql))
        assert pg_names <= lite_names or lite_names <= pg_names, (query.name, pg_names, lite_names)


def test_every_shipped_query_is_documented_with_what_serves_it() -> None:
    for dialect in DIALECTS:
        for query in SqlCatalog.load(dialect):
            assert query.doc, f"{query.location}: {query.name} has no doc comment"
            assert re.search(r"\bServed by\b", query.doc), (
                f"{query.location}: {query.name} doc lacks 'Served by'"
            )
            assert query.location.startswith(str(sql_root())), query.location


def test_every_dialect_variant_has_a_counterpart() -> None:
    # A name only in sql/<store>/postgres/ would be missing on SQLite; the name-set test catches it, and
    # this one says which file to fix.
    def names(folder: Path, store: str) -> set[str]:
        return {q.name for p in sorted(folder.glob("*.sql")) for q in parse_sql_file(p, store, "check")}

    for store in STORES:
        portable = names(sql_root() / store, store)
        for dialect in DIALECTS:
            other = next(d for d in DIALECTS if d != dialect)
            counterparts = portable | names(sql_root() / store / other, store)
            for path in sorted((sql_root() / store / dialect).glob("*.sql")):
                for query in parse_sql_file(path, store, dialect):
                    assert query.name in counterparts, f"{query.location}: no portable or {other} counterpart"


def _pg_prepare_text(sql: str) -> str:
    """The statement with `$n` placeholders, as PREPARE takes it (from the psycopg form)."""
    text, names = to_pyformat(sql)
    order = list(dict.fromkeys(names))
    text = re.sub(r"%\(([A-Za-z_][A-Za-z0-9_]*)\)s", lambda m: f"${order.index(m.group(1)) + 1}", text)
    return text.replace("%%", "%")


def test_every_shipped_query_prepares_on_postgres(pg_only_settings: Settings) -> None:
    catalog = SqlCatalog.load("postgres")
    problems = []
    with psycopg.connect(**pg_target(pg_only_settings).connect_kwargs(), autocommit=True) as conn:
        # the check itself catches a typo in a column name
        with pytest.raises(psycopg.errors.UndefinedColumn):
            conn.execute(
                "PREPARE tgp_check AS "
                + _pg_prepare_text("SELECT sorce_ref FROM raw.raw_messages WHERE channel_id = :c")
            )
        for query in catalog:
            try:
                conn.execute(f"PREPARE tgp_check AS {_pg_prepare_text(query.sql)}")
                conn.execute("DEALLOCATE tgp_check")
            except psycopg.Error as exc:
                problems.append(f"{query.location} {query.name}: {str(exc).splitlines()[0]}")
    assert not problems, "\n".join(problems)


def test_every_shipped_query_explains_on_sqlite(sqlite_dir: Path) -> None:
    from conftest import sqlite_settings

    db = open_database(sqlite_settings(sqlite_dir))
    problems = []
    try:
        with pytest.raises(sqlite3.OperationalError, match="no such column"):
            db.raw_connection().execute("EXPLAIN QUERY PLAN SELECT sorce_ref FROM raw.raw_messages")
        for query in db.catalog:
            params = dict.fromkeys(parameter_names(query.sql))
            try:
                # Preparing is the check (a plain INSERT … VALUES has an empty plan).
                db.explain(query.name, params)
            except Exception as exc:
                problems.append(f"{query.location} {query.name}: {exc}")
    finally:
        db.close()
    assert not problems, "\n".join(problems)


def test_explain_runs_on_both_dialects_with_parameters(db) -> None:
    plan = "\n".join(db.explain("sources_get", {"source_id": "x'%:;"}))
    assert plan
    # The primary key serves it (named differently by each planner, both mention an index on sources).
    assert re.search(r"(?i)index", plan), plan
