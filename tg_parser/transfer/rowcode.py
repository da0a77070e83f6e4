"""Per-table row code: the canonical rendering of a row (`renderer`), the binary COPY field of each
column (`copy_fields`, which psycopg's binary dumpers write) and the NUL stripping of `--on-nul strip`.

The renderer runs once per row over millions of rows, so it is generated per table as one Python
expression (`b"".join((field0, field1, …))`) instead of looping over column objects: a loop with a call
per value cost about twice as much. The generated source only ever refers to positions in the row tuple and to
the helpers in `_NAMESPACE`; no name or value from the databases is part of it.

Values arrive as SQLite returns them with `text_factory=bytes`: bytes for text, int, float, None.
The renderer expects rows the scan found clean (storage classes fit, see `introspect._sqlite_problem`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tg_parser.transfer.canonical import canonical_json, json_field, real_field
from tg_parser.transfer.schema import BOOL, INT, JSON, REAL, TEXT, TS, Table

Row = tuple[Any, ...]

_NAMESPACE: dict[str, Any] = {
    "NULL_FIELD": b"N",
    "JSON_FIELD": json_field,
    "REAL_FIELD": real_field,
}


def _compile(name: str, body: str) -> Callable[[Row], bytes]:
    namespace = dict(_NAMESPACE)
    # The source is built from column kinds and row positions only (see the module docstring).
    exec(f"def {name}(r):\n    return {body}\n", namespace)
    return namespace[name]  # type: ignore[no-any-return]


def _nullable(value: str, expression: str, null: str) -> str:
    return f"({null} if {value} is None else {expression})"


def renderer(table: Table, offset: int = 0) -> Callable[[Row], bytes]:
    """row → its canonical rendering (see canonical.py); values start at `row[offset]`.

    JSON is rendered by `json_field`, which raises JsonRejected for JSON PostgreSQL would refuse (or
    holding `\\u0000`). Text is not checked here: the caller looks for NUL bytes and decodes the
    rendering (invalid UTF-8) in one go.
    """
    fields = []
    for index, column in enumerate(table.columns):
        v = f"r[{offset + index}]"
        if column.kind == INT:
            expression = f"b'I%d;' % {v}"
        elif column.kind == BOOL:
            expression = f"(b'B1' if {v} else b'B0')"
        elif column.kind == TS:
            expression = f"b'D' + {v}"
        elif column.kind == REAL:
            expression = f"REAL_FIELD({v})"
        elif column.kind == TEXT:
            # Three pieces, not one concatenation: the text (often the longest value) is copied once,
            # by the join, instead of once more per `+`.
            fields.append(f"(NULL_FIELD if {v} is None else b'T')")
            fields.append(f"(b'' if {v} is None else {v}.replace(b'\\\\', b'\\\\\\\\'))")
            fields.append(f"(b'' if {v} is None else b'\\\\;')")
            continue
        elif column.kind == JSON:
            expression = f"JSON_FIELD({v})"
        else:
            raise ValueError(f"unsupported column kind {column.kind}")
        fields.append(_nullable(v, expression, "NULL_FIELD"))
    return _compile("render", "b''.join((" + ", ".join(fields) + ",))")


def copy_fields(table: Table) -> list[str]:
    """The binary COPY field of each column (`tg_parser.db.bulk_postgres.COPY_FIELDS`), for the values
    the feed returns: timestamps as microseconds since 2000-01-01 UTC (`introspect.sqlite_feed_sql`),
    text and JSON as the stored bytes."""
    fields = []
    for column in table.columns:
        if column.kind == INT:
            fields.append({"integer": "int4", "smallint": "int2"}.get(column.pg_type, "int8"))
        else:
            kinds = {TS: "timestamptz", BOOL: "bool", REAL: "float8", TEXT: "text", JSON: "jsonb"}
            fields.append(kinds[column.kind])
    return fields


def strip_nuls(table: Table, row: Row, offset: int = 0) -> Row:
    """The row with NUL characters removed from text values and from JSON strings (`--on-nul strip`);
    JSON that held `\\u0000` is replaced by its canonical text (which jsonb reads as the same value)."""
    values = list(row)
    for index, column in enumerate(table.columns):
        value = values[offset + index]
        if value is None or not isinstance(value, bytes):
            continue
        if column.kind == TEXT:
            values[offset + index] = value.replace(b"\x00", b"")
        elif column.kind == JSON and b"\\u0000" in value:
            values[offset + index] = canonical_json(value, strip_nuls=True).encode()
    return tuple(values)
