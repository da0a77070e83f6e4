"""Per-table row functions: the canonical rendering of a row and its COPY encoding (text or binary).

Both run once per row over millions of rows, so they are generated per table as one Python expression
(`b"".join((field0, field1, …))`) instead of looping over column objects: a loop with a call per value
cost about twice as much. The generated source only ever refers to positions in the row tuple and to
the helpers in `_NAMESPACE`; no name or value from the databases is part of it.

Values arrive as SQLite returns them with `text_factory=bytes`: bytes for text, int, float, None.
The renderer expects rows the scan found clean (storage classes fit, see `introspect._sqlite_problem`);
the encoders expect the same, and raise (TypeError, struct.error) on anything else, which stops the load
(the scan then names the offender).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from tg_parser.transfer.canonical import canonical_json, json_field, real_field
from tg_parser.transfer.schema import BOOL, INT, JSON, REAL, TEXT, TS, Column, Table

try:
    from tg_parser.transfer import _copybin
except ImportError:  # pragma: no cover - the package was built without a C compiler
    _copybin = None

Row = tuple[Any, ...]

_NAMESPACE: dict[str, Any] = {
    "NULL_FIELD": b"N",
    "JSON_FIELD": json_field,
    "REAL_FIELD": real_field,
    # binary COPY pieces
    "NULL_BIN": b"\xff\xff\xff\xff",
    "I2": struct.Struct(">h").pack,
    "I4": struct.Struct(">i").pack,
    "I8": struct.Struct(">q").pack,
    "F8": struct.Struct(">d").pack,
    "LEN2": b"\x00\x00\x00\x02",
    "LEN4": b"\x00\x00\x00\x04",
    "LEN8": b"\x00\x00\x00\x08",
    "TRUE_BIN": b"\x00\x00\x00\x01\x01",
    "FALSE_BIN": b"\x00\x00\x00\x01\x00",
    # text COPY pieces
    "NULL_TEXT": b"\\N",
}

# Binary COPY stream framing (PostgreSQL docs, "COPY: Binary Format").
BINARY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
BINARY_TRAILER = b"\xff\xff"


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


def binary_encoder(table: Table, offset: int = 0) -> Callable[[Row], bytes]:
    """row → one tuple of binary COPY. Timestamps must arrive as microseconds since 2000-01-01 UTC
    (see `introspect.sqlite_feed_sql`); JSON as jsonb's binary format, version 1 then the text."""
    pieces = [repr(struct.pack(">h", len(table.columns)))]
    for index, column in enumerate(table.columns):
        v = f"r[{offset + index}]"
        if column.kind == INT:
            width = {"integer": 4, "smallint": 2}.get(column.pg_type, 8)
            expression = f"LEN{width} + I{width}({v})"
        elif column.kind == TS:
            expression = f"LEN8 + I8({v})"
        elif column.kind == BOOL:
            expression = f"(TRUE_BIN if {v} else FALSE_BIN)"
        elif column.kind == REAL:
            expression = f"LEN8 + F8({v})"
        elif column.kind == TEXT:
            expression = f"I4(len({v})) + {v}"
        elif column.kind == JSON:
            expression = f"I4(len({v}) + 1) + b'\\x01' + {v}"
        else:
            raise ValueError(f"unsupported column kind {column.kind}")
        pieces.append(_nullable(v, expression, "NULL_BIN"))
    return _compile("encode", "b''.join((" + ", ".join(pieces) + ",))")


def _binary_kind(column: Column) -> bytes:
    if column.kind == INT:
        return {"integer": b"i", "smallint": b"h"}.get(column.pg_type, b"q")
    return {TS: b"t", BOOL: b"b", REAL: b"d", TEXT: b"s", JSON: b"j"}[column.kind]


def batched(encode_row: Callable[[Row], bytes]) -> Callable[[list[Row]], bytes]:
    """A row encoder made into a batch encoder (the batch's rows, joined)."""
    return lambda rows: b"".join(map(encode_row, rows))


def binary_batch_encoder(table: Table, offset: int = 0) -> Callable[[list[Row]], bytes]:
    """rows → their binary COPY tuples, joined: `_copybin.encode` (C, one call per batch) when it is
    built, else `binary_encoder` row by row. Both give the same bytes and refuse the same rows."""
    if _copybin is None:
        return batched(binary_encoder(table, offset))
    kinds = b"".join(_binary_kind(column) for column in table.columns)
    compiled = _copybin.encode
    return lambda rows: compiled(rows, kinds, offset)  # type: ignore[no-any-return]


_ESCAPE = ".replace(b'\\\\', b'\\\\\\\\').replace(b'\\t', b'\\\\t').replace(b'\\n', b'\\\\n').replace(b'\\r', b'\\\\r')"


def text_encoder(table: Table, offset: int = 0) -> Callable[[Row], bytes]:
    """row → one line of text COPY (backslash, tab, newline and CR escaped; NULL as \\N)."""
    values = []
    for index, column in enumerate(table.columns):
        v = f"r[{offset + index}]"
        if column.kind in (INT, BOOL):
            expression = f"b'%d' % {v}"
        elif column.kind == TS:
            expression = v
        elif column.kind == REAL:
            expression = f"repr(float({v})).encode()"  # the shortest text that reads back exactly
        elif column.kind in (TEXT, JSON):
            expression = v + _ESCAPE
        else:
            raise ValueError(f"unsupported column kind {column.kind}")
        values.append(_nullable(v, expression, "NULL_TEXT"))
    return _compile("encode", "b'\\t'.join((" + ", ".join(values) + ",)) + b'\\n'")


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
