"""The scan: every value of the source that PostgreSQL would reject or change, and the source
checksums, in one read of the SQLite files.

SQLite itself evaluates a problem bit per column (storage class vs. the target column, integer ranges,
0/1 booleans, the fixed timestamp format and a real calendar date). Clean rows are then rendered and
hashed, which proves the rest: their text holds no NUL and decodes as UTF-8 (SQLite stores whatever
bytes it was given, PostgreSQL accepts only UTF-8) and their JSON parses the way jsonb would accept it.
Rows with a problem are looked at column by column and every problem is named.

With `on_nul="strip"` a NUL character is not an offence but a repair: it is counted per column and the
loader removes it (from text, and from JSON strings).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from tg_parser.transfer.canonical import JsonRejected, canonical_json, row_hash
from tg_parser.transfer.checksum import python_row
from tg_parser.transfer.introspect import KeyRange, flag_word_count
from tg_parser.transfer.rowcode import renderer
from tg_parser.transfer.schema import BOOL, INT, JSON, REAL, TEXT, TS, Column, Table
from tg_parser.transfer.source import SqliteSource, normalise_key

TS_FORMAT_HINT = "YYYY-MM-DDTHH:MM:SS.ffffffZ"


@dataclass(frozen=True)
class Offender:
    table: str  # store.table
    key: dict[str, Any]
    column: str
    problem: str

    def as_dict(self) -> dict[str, Any]:
        return {"table": self.table, "key": self.key, "column": self.column, "problem": self.problem}

    def one_line(self) -> str:
        key = ", ".join(f"{k}={v!r}" for k, v in self.key.items())
        return f"{self.table} [{key}] {self.column}: {self.problem}"


@dataclass
class ScanResult:
    rows: dict[str, int] = field(default_factory=dict)
    offenders: list[Offender] = field(default_factory=list)
    offenders_total: int = 0
    repairs: dict[str, dict[str, int]] = field(default_factory=dict)  # table → column → changed cells

    @property
    def repaired_cells(self) -> int:
        return sum(sum(cols.values()) for cols in self.repairs.values())


def _show(value: Any, limit: int = 40) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _utf8_problem(raw: bytes) -> str | None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 4].hex(" ")
        return f"invalid UTF-8 at byte {exc.start} ({bad}); PostgreSQL accepts only UTF-8"
    return None


def _timestamp_problem(text: str) -> str | None:
    from datetime import datetime

    if len(text) != 27 or not text.endswith("Z") or text[10] != "T":
        return f"malformed timestamp {_show(text)} (expected {TS_FORMAT_HINT})"
    try:
        parsed = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return f"malformed timestamp {_show(text)} (not a real date/time in {TS_FORMAT_HINT})"
    if parsed.year < 1:
        return f"malformed timestamp {_show(text)} (year 0)"
    return None


def diagnose(column: Column, storage: str, value: Any, *, strip_nul: bool) -> tuple[str | None, bool]:
    """(problem or None, repaired?) for one value, given its SQLite storage class."""
    if storage == "null":
        return None, False
    where = f"{column.pg_type} column"
    if column.kind == INT:
        if storage == "integer":
            low, high = column.int_range or (-(2**63), 2**63 - 1)
            if not low <= value <= high:
                return f"integer {value} is beyond the range of {column.pg_type} ({low}..{high})", False
            return None, False
        if storage == "real" and float(value).is_integer():
            return f"number {value!r} is beyond the range of {column.pg_type} (stored as real)", False
        return f"{storage} value {_show(value)} in an integer ({where})", False
    if column.kind == BOOL:
        if storage == "integer":
            return (
                (None, False) if value in (0, 1) else (f"boolean column holds {value} (only 0 and 1)", False)
            )
        return f"{storage} value {_show(value)} in a boolean ({where})", False
    if column.kind == REAL:
        return (
            (None, False)
            if storage in ("real", "integer")
            else (f"{storage} value {_show(value)} in a {where}", False)
        )
    if storage != "text":
        return f"{storage} value {_show(value)} in a {column.sqlite_type} ({where})", False
    raw: bytes = value
    problem = _utf8_problem(raw)
    if problem:
        return problem, False
    if column.kind == TEXT:
        if b"\x00" in raw:
            if strip_nul:
                return None, True
            position = raw.index(b"\x00")
            return f"NUL character at byte {position} (PostgreSQL text cannot hold it)", False
        return None, False
    if column.kind == TS:
        return _timestamp_problem(raw.decode()), False
    if column.kind == JSON:
        try:
            canonical_json(raw)
        except JsonRejected as exc:
            if strip_nul and "\\u0000" in str(exc):
                try:
                    canonical_json(raw, strip_nuls=True)
                except JsonRejected as again:
                    return f"JSON rejected by PostgreSQL: {again}", False
                return None, True
            return f"JSON rejected by PostgreSQL: {exc}", False
        return None, False
    return None, False


@dataclass(frozen=True)
class Unit:
    """One key range of one table: the grain of the parallel scan."""

    table: Table
    index: int
    bounds: KeyRange | None


@dataclass
class UnitResult:
    table: str
    index: int
    rows: int = 0
    value: int = 0  # sum of row hashes (not yet reduced modulo 2**128)
    offenders: list[Offender] = field(default_factory=list)  # at most `limit` listed
    offences: int = 0  # all of them
    repairs: dict[str, int] = field(default_factory=dict)


def check_unit(
    source: SqliteSource, unit: Unit, *, strip_nul: bool, limit: int, check_utf8: bool = True
) -> UnitResult:
    """Scan one key range for hostile values and sum the row hashes of its clean rows.

    `check_utf8=False` leaves text that is not UTF-8 to PostgreSQL, which refuses it in COPY (decoding
    every text value is a tenth of the scan): the load then fails, and the runner scans again with
    the check to name the offenders. JSON is always decoded (to render it), so always checked.
    """
    table = unit.table
    result = UnitResult(table.qualified, unit.index)
    width = len(table.key)
    parts_at = width + flag_word_count(table)
    single_word = parts_at == width + 1
    render = renderer(table, parts_at)
    md5 = hashlib.md5
    from_bytes = int.from_bytes
    value = 0
    for batch in source.check_batches(table, unit.bounds):
        result.rows += len(batch)
        for row in batch:
            if row[width] if single_word else any(row[width:parts_at]):
                _diagnose(source, table, row[:width], result, strip_nul=strip_nul, limit=limit)
                continue
            try:
                rendering = render(row)
                # JSON was checked while rendering; text must be UTF-8 without NUL (the rest is ASCII).
                if b"\x00" in rendering:
                    raise JsonRejected("NUL")
                if check_utf8:
                    rendering.decode()
            except (JsonRejected, UnicodeDecodeError):
                _diagnose(source, table, row[:width], result, strip_nul=strip_nul, limit=limit)
                continue
            value += from_bytes(md5(rendering, usedforsecurity=False).digest(), "big")
    result.value += value
    return result


def _diagnose(
    source: SqliteSource,
    table: Table,
    key: tuple[Any, ...],
    result: UnitResult,
    *,
    strip_nul: bool,
    limit: int,
) -> None:
    """Name every problem of one row; a row that only needs NUL stripping is hashed as repaired."""
    typed = source.typed_row(table, key)
    key_dict = table.key_dict(normalise_key(table, key))
    problems = 0
    for index, column in enumerate(table.columns):
        storage = typed[2 * index].decode() if isinstance(typed[2 * index], bytes) else str(typed[2 * index])
        problem, repaired = diagnose(column, storage, typed[2 * index + 1], strip_nul=strip_nul)
        if repaired:
            result.repairs[column.name] = result.repairs.get(column.name, 0) + 1
        if problem:
            problems += 1
            result.offences += 1
            if len(result.offenders) < limit:
                result.offenders.append(Offender(table.qualified, key_dict, column.name, problem))
    if not problems:
        rendering = python_row(table, source.raw_row(table, key), strip_nul=strip_nul)
        result.value += row_hash(rendering)


def orphans(source: SqliteSource, tables: list[Table]) -> list[Offender]:
    """Children whose parent row is missing: PostgreSQL enforces the foreign key and would fail."""
    found: list[Offender] = []
    by_name = {(t.store, t.name): t for t in tables}
    for store in sorted({t.store for t in tables}):
        for child, rowid, parent in source.foreign_key_violations(store):
            table = by_name.get((store, child))
            if table is None:
                continue
            key = source.key_of_rowid(table, rowid)
            found.append(
                Offender(
                    table.qualified,
                    table.key_dict(normalise_key(table, key)) if key else {"rowid": rowid},
                    "(foreign key)",
                    f"references a row missing from {store}.{parent}; PostgreSQL enforces the key",
                )
            )
    return found
