"""The named-SQL catalog: `.sql` files with `-- name:` blocks, per store, per dialect, with overrides.

    -- name: raw_insert_message
    -- Insert one raw message; a re-seen source_ref is left as it is (snapshot rule).
    -- Served by: raw_messages primary key.
    INSERT INTO raw.raw_messages (...) VALUES (...) ON CONFLICT (source_ref) DO NOTHING;

Lookup order for a name: TG_PARSER_SQL_DIR (operator overrides; `<dialect>/` sub-folders win there
too) → sql/<store>/<dialect>/ → sql/<store>/. Names are unique across the whole catalog.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from tg_parser.db.params import to_pyformat
from tg_parser.db.resources import DIALECTS, STORES, sql_root
from tg_parser.errors import QueryNotFound, SqlCatalogError

_HEADER = re.compile(r"^--\s*name:\s*(?P<name>\S+)\s*$")
_VALID_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class Query:
    name: str
    store: str
    sql: str
    doc: str
    path: Path
    line: int
    origin: str  # "portable", the dialect's name, or "override"

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


def parse_sql_file(path: Path, store: str, origin: str) -> list[Query]:
    """Split one file into its named blocks; anything malformed is an error naming file and line."""
    text = path.read_text(encoding="utf-8")
    queries: list[Query] = []
    current: dict | None = None

    def finish() -> None:
        if current is None:
            return
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
