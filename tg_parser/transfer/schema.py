"""What the migrator knows about a table: its columns, their logical kind on both sides, its key.

Pure data, no driver: built by `introspect.py` from SQLite's and PostgreSQL's own catalogs, and used by the
scan, the loader and the checksums. A column's *kind* is the logical type both dialects agree on:

====== ====================== ==========================================
kind   SQLite declared type   PostgreSQL type
====== ====================== ==========================================
int    INTEGER                bigint, integer, smallint
bool   BOOLEAN_INT            boolean
text   TEXT                   text (also varchar)
ts     TIMESTAMP_TEXT         timestamp with time zone
json   JSON_TEXT              jsonb
real   REAL                   double precision
====== ====================== ==========================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

INT, BOOL, TEXT, TS, JSON, REAL = "int", "bool", "text", "ts", "json", "real"

SQLITE_KINDS: dict[str, str] = {
    "INTEGER": INT,
    "BOOLEAN_INT": BOOL,
    "TEXT": TEXT,
    "TIMESTAMP_TEXT": TS,
    "JSON_TEXT": JSON,
    "REAL": REAL,
}

PG_KINDS: dict[str, str] = {
    "bigint": INT,
    "integer": INT,
    "smallint": INT,
    "boolean": BOOL,
    "text": TEXT,
    "character varying": TEXT,
    "timestamp with time zone": TS,
    "jsonb": JSON,
    "double precision": REAL,
}

# Ranges of the PostgreSQL integer types (SQLite integers are always 64-bit).
INT_RANGES: dict[str, tuple[int, int]] = {
    "bigint": (-(2**63), 2**63 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "smallint": (-(2**15), 2**15 - 1),
}

# PostgreSQL type names for binary COPY (`Copy.set_types`).
PG_COPY_TYPES: dict[str, str] = {
    "bigint": "int8",
    "integer": "int4",
    "smallint": "int2",
    "boolean": "bool",
    "text": "text",
    "character varying": "varchar",
    "timestamp with time zone": "timestamptz",
    "jsonb": "jsonb",
    "double precision": "float8",
}


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    sqlite_type: str
    pg_type: str
    not_null: bool = False

    @property
    def int_range(self) -> tuple[int, int] | None:
        return INT_RANGES.get(self.pg_type) if self.kind == INT else None


@dataclass
class Table:
    store: str
    name: str
    columns: list[Column]
    key: list[str]  # primary key columns, in key order
    identity: list[str] = field(default_factory=list)  # PostgreSQL columns fed by a sequence
    parents: list[str] = field(default_factory=list)  # tables of the same store this one references

    @property
    def qualified(self) -> str:
        return f"{self.store}.{self.name}"

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)

    @property
    def key_columns(self) -> list[Column]:
        return [self.column(name) for name in self.key]

    def key_dict(self, values: tuple[Any, ...]) -> dict[str, Any]:
        return dict(zip(self.key, values, strict=True))


def load_order(tables: list[Table]) -> list[Table]:
    """Parents before children (foreign keys), otherwise in catalog order."""
    by_name = {t.qualified: t for t in tables}
    done: list[Table] = []
    seen: set[str] = set()

    def visit(table: Table, path: tuple[str, ...] = ()) -> None:
        if table.qualified in seen or table.qualified in path:
            return
        for parent in table.parents:
            ref = by_name.get(f"{table.store}.{parent}")
            if ref is not None and ref is not table:
                visit(ref, (*path, table.qualified))
        seen.add(table.qualified)
        done.append(table)

    for table in tables:
        visit(table)
    return done
