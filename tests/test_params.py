"""`:name` → `%(name)s` translation for psycopg, on a corpus of tricky statements, then for real.

The corpus pins the exact output text: every `:name` outside literals/comments becomes a placeholder,
everything else is left byte for byte, except `%`, which psycopg would read as a placeholder and must
therefore be doubled wherever it appears (psycopg scans the whole text, strings and comments included).
The second half runs such statements on PostgreSQL (and the portable ones on SQLite) with parameters,
so a translation that merely *looks* right but breaks the statement is caught too.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import pg_settings, require_postgres

from tg_parser.db.base import Database
from tg_parser.db.catalog import SqlCatalog
from tg_parser.db.connect import pg_target
from tg_parser.db.params import parameter_names, to_pyformat, typed_value
from tg_parser.db.postgres import PostgresDatabase
from tg_parser.db.sqlite import SqliteDatabase

# (statement, expected psycopg text, expected names in order of appearance)
CORPUS: list[tuple[str, str, list[str]]] = [
    # casts: `::` is never a parameter, also right after one
    ("SELECT :x::int", "SELECT %(x)s::int", ["x"]),
    ("SELECT a::text, :b", "SELECT a::text, %(b)s", ["b"]),
    ("SELECT :x::int[], '1'::int", "SELECT %(x)s::int[], '1'::int", ["x"]),
    ("SELECT CAST(:x AS BIGINT)", "SELECT CAST(%(x)s AS BIGINT)", ["x"]),
    ("SELECT (:a)::jsonb->>'k'", "SELECT (%(a)s)::jsonb->>'k'", ["a"]),
    # string literals with ':name', '%' and '' escapes
    ("SELECT ':name', :p", "SELECT ':name', %(p)s", ["p"]),
    ("SELECT 'it''s :not 100% a param', :p", "SELECT 'it''s :not 100%% a param', %(p)s", ["p"]),
    ("SELECT '', :p, ''''", "SELECT '', %(p)s, ''''", ["p"]),
    # E'' strings: backslash escapes the quote, so the string runs on past `\'`
    ("SELECT E'\\' :no', :p", "SELECT E'\\' :no', %(p)s", ["p"]),
    ("SELECT e'a\\\\', :p", "SELECT e'a\\\\', %(p)s", ["p"]),
    # both escape styles in one E'' string (`\'` then `''`): the :x inside is still text
    ("SELECT (E'\\''':x'), :p", "SELECT (E'\\''':x'), %(p)s", ["p"]),
    # a standard string: the backslash is an ordinary character and the second quote closes it
    ("SELECT 'a\\', :p", "SELECT 'a\\', %(p)s", ["p"]),
    # an identifier ending in e before a quote is not an E prefix (`name='\'` is a standard string)
    ("SELECT x FROM t WHERE name='\\' AND v = :p", "SELECT x FROM t WHERE name='\\' AND v = %(p)s", ["p"]),
    # quoted identifiers, with "" escapes
    (
        'SELECT "weird:col", "a""b:c" FROM t WHERE v = :v',
        'SELECT "weird:col", "a""b:c" FROM t WHERE v = %(v)s',
        ["v"],
    ),
    ('SELECT "100%" FROM t', 'SELECT "100%%" FROM t', []),
    # dollar quotes: $$ and $tag$, with quotes, :names, % and other tags inside
    ("SELECT $$ :x % $$, :p", "SELECT $$ :x %% $$, %(p)s", ["p"]),
    ("SELECT $fn$ it's :x $$ :y $fn$, :p", "SELECT $fn$ it's :x $$ :y $fn$, %(p)s", ["p"]),
    ("SELECT $a$ $b$ :x $b$ $a$ || :p", "SELECT $a$ $b$ :x $b$ $a$ || %(p)s", ["p"]),
    # `$` inside an identifier does not open a dollar quote
    ("SELECT a$b$c, :p", "SELECT a$b$c, %(p)s", ["p"]),
    # comments: -- to end of line and nested /* */, both containing :names and %
    ("-- :nope 50%\nSELECT :p", "-- :nope 50%%\nSELECT %(p)s", ["p"]),
    ("SELECT 1 -- trailing :x", "SELECT 1 -- trailing :x", []),
    (
        "/* outer /* inner :x */ still comment :y 5% */ SELECT :p",
        "/* outer /* inner :x */ still comment :y 5%% */ SELECT %(p)s",
        ["p"],
    ),
    ("SELECT :a /* :b */ + :c -- :d\n, :e", "SELECT %(a)s /* :b */ + %(c)s -- :d\n, %(e)s", ["a", "c", "e"]),
    # a string that contains comment openers is still just a string
    ("SELECT '-- :x', '/* :y', :p", "SELECT '-- :x', '/* :y', %(p)s", ["p"]),
    # % as an operator and inside LIKE patterns
    (
        "SELECT a % 2 FROM t WHERE b LIKE 'x%' AND c LIKE :pat",
        "SELECT a %% 2 FROM t WHERE b LIKE 'x%%' AND c LIKE %(pat)s",
        ["pat"],
    ),
    ("SELECT :a%:b", "SELECT %(a)s%%%(b)s", ["a", "b"]),
    # array slices with numbers are not parameters
    ("SELECT arr[1:2], arr[:3], :p", "SELECT arr[1:2], arr[:3], %(p)s", ["p"]),
    # repeated parameters, adjacency, names with digits and underscores, start and end of text
    ("WHERE a = :x OR b = :x", "WHERE a = %(x)s OR b = %(x)s", ["x", "x"]),
    (":first,(:x_1),:_y2", "%(first)s,(%(x_1)s),%(_y2)s", ["first", "x_1", "_y2"]),
    # a lone colon or one followed by a non-name is left as is
    ("SELECT 1 : 2, ':'", "SELECT 1 : 2, ':'", []),
    # unterminated constructs swallow the rest (the server then reports the syntax error)
    ("SELECT ':x", "SELECT ':x", []),
    ("SELECT /* :x", "SELECT /* :x", []),
    ("SELECT $q$ :x", "SELECT $q$ :x", []),
]


@pytest.mark.parametrize(("sql", "expected", "names"), CORPUS, ids=[c[0][:40] for c in CORPUS])
def test_to_pyformat_corpus(sql: str, expected: str, names: list[str]) -> None:
    assert to_pyformat(sql) == (expected, names)


def test_translated_text_has_no_stray_percent() -> None:
    # Every `%` psycopg sees must be a placeholder or a doubled literal, or it raises at execute time.
    import re

    for sql, _, _ in CORPUS:
        text, _ = to_pyformat(sql)
        leftover = re.sub(r"%\([A-Za-z_][A-Za-z0-9_]*\)s|%%", "", text)
        assert "%" not in leftover, sql


def test_parameter_names_are_distinct_in_first_seen_order() -> None:
    assert parameter_names("SELECT :b, :a, :b, ':c', :a::int") == ["b", "a"]
    assert parameter_names("SELECT 1") == []


def test_shipped_queries_round_trip_unchanged_except_placeholders() -> None:
    # On the real catalog: undoing the translation gives back the original text exactly.
    import re

    for dialect in ("sqlite", "postgres"):
        for query in SqlCatalog.load(dialect):
            text, names = to_pyformat(query.sql)
            restored = re.sub(r"%\(([A-Za-z_][A-Za-z0-9_]*)\)s", r":\1", text).replace("%%", "%")
            assert restored == query.sql, query.name
            assert set(names) == set(parameter_names(query.sql))


# --- for real ---------------------------------------------------------------------------------------

PORTABLE_SQL = """
-- name: probe_literals
-- String literals, quoted identifiers and comments that look like parameters. Served by: no table.
SELECT ':name' AS colon_literal,
       'it''s 100%' AS percent_literal,
       "col:x" AS quoted, -- a comment with :nope and 5%
       /* a block comment with :nope and % (SQLite does not nest comments) */ :p AS p
FROM (SELECT :q AS "col:x") AS s;

-- name: probe_like
-- LIKE with a literal % pattern and a bound pattern, plus the modulo operator. Served by: no table.
SELECT :s LIKE 'ab%' AS literal_match, :s LIKE :pat AS bound_match, :n % 3 AS modulo;

-- name: probe_repeated
-- One parameter used three times. Served by: no table.
SELECT :x + :x + :x AS triple;
"""

PG_SQL = """
-- name: probe_pg_casts
-- `::casts` right after parameters and on literals, E'' strings, dollar quotes. Served by: no table.
SELECT :x::int + 1 AS cast_sum,
       '41'::int AS literal_cast,
       E'\\':x' AS e_string,
       $$ :y % $$ AS dollar,
       $fn$ it's :z $fn$ AS tagged,
       :t::text || '%' AS text_cast /* a /* nested */ comment :nope % */;

-- name: probe_pg_slice
-- Array slices with a colon and a bound array. Served by: no table.
SELECT (ARRAY[10, 20, 30, 40])[2:3] AS slice, (:arr::int[])[1:2] AS bound_slice;
"""


def _catalog_root(tmp_path: Path) -> Path:
    root = tmp_path / "sql"
    (root / "raw" / "postgres").mkdir(parents=True)
    (root / "raw" / "probe.sql").write_text(PORTABLE_SQL, encoding="utf-8")
    (root / "raw" / "postgres" / "probe.sql").write_text(PG_SQL, encoding="utf-8")
    return root


@pytest.fixture(params=["sqlite", "postgres"])
def probe_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An executor on a test-only catalog; these probes read no table, so no migrated database is needed."""
    root = _catalog_root(tmp_path)
    db: Database
    if request.param == "sqlite":
        db = SqliteDatabase(tmp_path / "data", SqlCatalog.load("sqlite", root=root), create=True)
    else:
        require_postgres()
        db = PostgresDatabase(
            pg_target(pg_settings("postgres")), SqlCatalog.load("postgres", root=root), min_size=1, max_size=2
        )
    try:
        yield db
    finally:
        db.close()


def test_literals_and_comments_survive(probe_db: Database) -> None:
    row = probe_db.fetch_one("probe_literals", {"p": "x'y%z:w;", "q": "quoted:value%"})
    assert row == {
        "colon_literal": ":name",
        "percent_literal": "it's 100%",
        "quoted": "quoted:value%",
        "p": "x'y%z:w;",
    }


def test_like_and_modulo(probe_db: Database) -> None:
    row = probe_db.fetch_one("probe_like", {"s": "abc", "pat": "%c", "n": 10})
    assert row is not None
    assert bool(row["literal_match"]) is True
    assert bool(row["bound_match"]) is True
    assert row["modulo"] == 1
    row = probe_db.fetch_one("probe_like", {"s": "xbc", "pat": "%d", "n": 9})
    assert row is not None
    assert not row["literal_match"] and not row["bound_match"] and row["modulo"] == 0


def test_repeated_parameter(probe_db: Database) -> None:
    assert probe_db.fetch_scalar("probe_repeated", {"x": 7}) == 21


@pytest.mark.postgres
def test_postgres_casts_strings_and_dollar_quotes(tmp_path: Path) -> None:
    require_postgres()
    catalog = SqlCatalog.load("postgres", root=_catalog_root(tmp_path))
    with PostgresDatabase(pg_target(pg_settings("postgres")), catalog, min_size=1, max_size=1) as db:
        row = db.fetch_one("probe_pg_casts", {"x": "41", "t": "a:b"})
        assert row == {
            "cast_sum": 42,
            "literal_cast": 41,
            "e_string": "':x",
            "dollar": " :y % ",
            "tagged": " it's :z ",
            "text_cast": "a:b%",
        }
        row = db.fetch_one("probe_pg_slice", {"arr": "{7,8,9}"})
        assert row == {"slice": [20, 30], "bound_slice": [7, 8]}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", 42),
        ("-9223372036854775808", -(2**63)),
        ("true", True),
        ("FALSE", False),
        ("null", None),
        ("None", None),
        ('["tg:1:post:1"]', ["tg:1:post:1"]),
        ('{"a": 1}', {"a": 1}),
        ("[not json", "[not json"),
        ("2025-01-31", datetime(2025, 1, 31, tzinfo=UTC)),
        ("2025-01-31T12:00:00Z", datetime(2025, 1, 31, 12, tzinfo=UTC)),
        ("2025-01-31T14:00:00+02:00", datetime(2025, 1, 31, 12, tzinfo=UTC)),
        ("2025-13-45", "2025-13-45"),
        ("tg:1500000001:post:1", "tg:1500000001:post:1"),
        ("", ""),
    ],
)
def test_typed_value(text: str, expected: object) -> None:
    """How `sql explain -p` and the `-- example:` lines type a value written as text."""
    value = typed_value(text)
    assert value == expected and type(value) is type(expected)
    if isinstance(value, datetime):
        assert value.utcoffset() == timedelta(0)
