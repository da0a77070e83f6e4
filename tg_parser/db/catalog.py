"""The named-SQL catalog: `.sql` files with `-- name:` blocks, per store, per dialect, with overrides.

    -- name: raw_insert_message
    -- Insert one raw message; a re-seen source_ref is left as it is (snapshot rule).
    -- Served by: raw_messages primary key.
    -- example: source_ref=tg:1500000001:post:1 channel_id=1500000001 ...
    INSERT INTO raw.raw_messages (...) VALUES (...) ON CONFLICT (source_ref) DO NOTHING;

Two header lines are directives as well as documentation: `-- example: k=v ...` (one line, shell-style
quoting: example values for every parameter, used by `tg-parser sql explain NAME` without `-p` and by
the query-plan gate in the tests) and `-- plan: seqscan-ok|sort-ok <reason>` (a full scan or an
explicit sort over a large table that is meant, with why; docs/SQL.md lists them).

Lookup order for a name: TG_PARSER_SQL_DIR (operator overrides; `<dialect>/` sub-folders win there
too) → sql/<store>/<dialect>/ → sql/<store>/. Names are unique across the whole catalog.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from tg_parser.db.params import to_numbered, to_pyformat
from tg_parser.db.resources import DIALECTS, STORES, sql_root
from tg_parser.errors import QueryNotFound, SqlCatalogError

_HEADER = re.compile(r"^--\s*name:\s*(?P<name>\S+)\s*$")
_VALID_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_EXAMPLE = re.compile(r"^example:(?P<body>.*)$")
_PLAN = re.compile(r"^plan:\s*(?P<kind>\S+)\s*(?P<reason>.*)$")
# What a `-- plan:` line may allow: a sequential scan (SQLite: a SCAN without an index) or an explicit
# sort over a large table.
PLAN_EXCEPTIONS = ("seqscan-ok", "sort-ok")


@dataclass(frozen=True)
class Query:
    name: str
    store: str
    sql: str
    doc: str
    path: Path
    line: int
    origin: str  # "portable", the dialect's name, or "override"
    # The `-- example:` values as written (text; db/params.typed_value types them); None when absent.
    example: dict[str, str] | None = field(default=None, compare=False, hash=False)
    # The `-- plan:` exceptions: kind ("seqscan-ok" / "sort-ok") → reason.
    plan_exceptions: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def location(self) -> str:
        return f"{self.path}:{self.line}"

    @cached_property
    def pyformat(self) -> str:
        """The statement as psycopg takes it (`:name` → `%(name)s`, literal `%` doubled; db/params.py).

        Rewritten once per query, on first use, and kept: the PostgreSQL executor runs this text, so a
        statement costs no scan of its SQL however often it runs. An override is a Query of its own, so
        it is rewritten from its own text.
        """
        return to_pyformat(self.sql)[0]

    @cached_property
    def numbered(self) -> tuple[str, tuple[str, ...]]:
        """The statement with numbered placeholders (`:name` → `?N`, SQLite) and the distinct parameter
        names in that order: what `Database.execute_many_tuples` binds a tuple per row to."""
        return to_numbered(self.sql)


def parse_sql_file(path: Path, store: str, origin: str) -> list[Query]:
    """Split one file into its named blocks; anything malformed is an error naming file and line."""
    text = path.read_text(encoding="utf-8")
    queries: list[Query] = []
    current: dict | None = None

    def finish() -> None:
        if current is None:
            return
        example, plan = _directives(current["doc"], path, current["line"])
        sql = "\n".join(current["sql"]).strip()
        while sql.endswith(";"):
            sql = sql[:-1].rstrip()
        if not sql:
            raise SqlCatalogError(
                f"{path}:{current['line']}: query {current['name']!r} has no SQL",
                "write the statement under its '-- name:' header",
            )
        queries.append(
            Query(
                name=current["name"],
                store=store,
                sql=sql,
                doc="\n".join(current["doc"]).strip(),
                path=path,
                line=current["line"],
                origin=origin,
                example=example,
                plan_exceptions=plan,
            )
        )

    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line.strip())
        if header:
            finish()
            name = header.group("name")
            if not _VALID_NAME.match(name):
                raise SqlCatalogError(
                    f"{path}:{number}: invalid query name {name!r}",
                    "use lower-case letters, digits and underscores",
                )
            current = {"name": name, "line": number, "doc": [], "sql": []}
            continue
        if current is None:
            if line.strip() and not line.strip().startswith("--"):
                raise SqlCatalogError(
                    f"{path}:{number}: SQL before the first '-- name:' header",
                    "start every statement with '-- name: <query_name>'",
                )
            continue
        stripped = line.strip()
        if not current["sql"] and stripped.startswith("--"):
            current["doc"].append(stripped[2:].strip())
        elif current["sql"] or stripped:
            current["sql"].append(line)
    finish()
    return queries


def _directives(doc: list[str], path: Path, line: int) -> tuple[dict[str, str] | None, dict[str, str]]:
    """The `-- example:` and `-- plan:` lines of one query's header, checked."""
    example: dict[str, str] | None = None
    plan: dict[str, str] = {}
    for text in doc:
        if match := _EXAMPLE.match(text):
            if example is not None:
                raise SqlCatalogError(
                    f"{path}:{line}: two '-- example:' lines", "give all example values on one line"
                )
            example = {}
            try:
                words = shlex.split(match.group("body"))
            except ValueError as exc:
                raise SqlCatalogError(
                    f"{path}:{line}: unreadable '-- example:' line ({exc})",
                    "quote values with spaces or quotes in them, shell-style: key='a value'",
                ) from None
            for word in words:
                key, sep, value = word.partition("=")
                if not sep or not key:
                    raise SqlCatalogError(
                        f"{path}:{line}: {word!r} in '-- example:' is not key=value",
                        "write the example as key=value pairs, e.g. '-- example: channel_id=1500000001'",
                    )
                example[key] = value
        elif match := _PLAN.match(text):
            kind, reason = match.group("kind"), match.group("reason").strip()
            if kind not in PLAN_EXCEPTIONS or not reason:
                raise SqlCatalogError(
                    f"{path}:{line}: '-- plan: {kind} {reason}'".rstrip() + " is not a plan exception",
                    f"write '-- plan: <{'|'.join(PLAN_EXCEPTIONS)}> <the reason>'",
                )
            plan[kind] = reason
    return example, plan


def _folder_queries(folder: Path, store: str, origin: str) -> dict[str, Query]:
    """All queries of one folder; a name defined twice in it is an error."""
    found: dict[str, Query] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.glob("*.sql")):
        for query in parse_sql_file(path, store, origin):
            if query.name in found:
                raise SqlCatalogError(
                    f"duplicate query name {query.name!r} in {folder}: "
                    f"{found[query.name].location} and {query.location}",
                    "rename or remove one of them",
                )
            found[query.name] = query
    return found


class SqlCatalog:
    """All named queries for one dialect, after dialect variants and operator overrides are applied."""

    def __init__(self, queries: dict[str, Query], dialect: str) -> None:
        self._queries = queries
        self.dialect = dialect

    @classmethod
    def load(cls, dialect: str, override_dir: Path | None = None, root: Path | None = None) -> SqlCatalog:
        if dialect not in DIALECTS:
            raise SqlCatalogError(f"unknown dialect {dialect!r}", f"use one of {', '.join(DIALECTS)}")
        root = root or sql_root()
        queries: dict[str, Query] = {}
        for store in STORES:
            portable = _folder_queries(root / store, store, "portable")
            variant = _folder_queries(root / store / dialect, store, dialect)
            for name, query in {**portable, **variant}.items():
                if name in queries and queries[name].store != store:
                    raise SqlCatalogError(
                        f"query name {name!r} is used by two stores: {queries[name].location} and {query.location}",
                        "query names must be unique across sql/",
                    )
                queries[name] = query
        if override_dir is not None:
            cls._apply_overrides(queries, dialect, override_dir)
        return cls(queries, dialect)

    @staticmethod
    def _apply_overrides(queries: dict[str, Query], dialect: str, override_dir: Path) -> None:
        if not override_dir.is_dir():
            raise SqlCatalogError(
                f"TG_PARSER_SQL_DIR {override_dir} is not a directory", "point it at a folder of .sql files"
            )
        other = set(DIALECTS) - {dialect}
        files = [
            p
            for p in sorted(override_dir.rglob("*.sql"))
            if not other & set(p.relative_to(override_dir).parts)
        ]
        # Files under a folder named for this dialect are applied last, so they win.
        files.sort(key=lambda p: dialect in p.relative_to(override_dir).parts)
        seen_in_folder: dict[tuple[Path, str], Query] = {}
        for path in files:
            for query in parse_sql_file(path, "?", "override"):
                key = (path.parent, query.name)
                if key in seen_in_folder:
                    raise SqlCatalogError(
                        f"duplicate query name {query.name!r} in {path.parent}: "
                        f"{seen_in_folder[key].location} and {query.location}",
                        "rename or remove one of them",
                    )
                seen_in_folder[key] = query
                if query.name not in queries:
                    raise SqlCatalogError(
                        f"override {query.location} names unknown query {query.name!r}"
                        + _suggest(query.name, queries),
                        "overrides replace existing queries; check the name with 'tg-parser sql list'",
                    )
                base = queries[query.name]
                queries[query.name] = Query(
                    query.name,
                    base.store,
                    query.sql,
                    query.doc or base.doc,
                    query.path,
                    query.line,
                    "override",
                    query.example if query.example is not None else base.example,
                    query.plan_exceptions or base.plan_exceptions,
                )

    def get(self, name: str) -> Query:
        try:
            return self._queries[name]
        except KeyError:
            raise QueryNotFound(
                f"unknown query {name!r}" + _suggest(name, self._queries),
                "list the names with 'tg-parser sql list'",
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._queries

    def __iter__(self) -> Iterator[Query]:
        return iter(sorted(self._queries.values(), key=lambda q: (q.store, q.name)))

    def __len__(self) -> int:
        return len(self._queries)


def _suggest(name: str, names: dict[str, Query] | list[str]) -> str:
    close = difflib.get_close_matches(name, list(names), n=5, cutoff=0.5)
    if not close:
        close = sorted(n for n in names if name.split("_")[0] in n)[:5]
    return f" (did you mean: {', '.join(close)}?)" if close else ""
