"""Type adaptation so stores see the same Python values on both dialects.

SQLite has no timestamp, JSON or boolean types, so the migrations declare `TIMESTAMP_TEXT`, `JSON_TEXT`
and `BOOLEAN_INT` (TEXT, TEXT and INTEGER affinity) and this module converts both ways:

* timestamps ↔ ISO-8601 UTC text with a fixed width, `2025-01-02T03:04:05.123456Z`, so text order is
  time order and an index on the column serves range scans;
* dict/list ↔ compact JSON text (UTF-8, no ASCII escaping);
* bool ↔ 0/1.

On PostgreSQL the native types do this; dict/list parameters are wrapped as jsonb.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

SQLITE_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # what format_timestamp writes


class NaiveDatetimeError(ValueError):
    pass


def format_timestamp(value: datetime) -> str:
    """The canonical text of an aware timestamp (also used by checksums and exports)."""
    if value.tzinfo is UTC:
        # The common case (every model and bulk path holds UTC): isoformat is C, pads the year to four
        # digits and, with this timespec, always writes the microseconds; only "+00:00" becomes "Z".
        return value.isoformat(timespec="microseconds")[:-6] + "Z"
    offset = value.utcoffset()
    if offset is None:
        raise NaiveDatetimeError(
            f"naive datetime {value.isoformat()} given; timestamps must be timezone-aware"
        )
    u = value - offset if offset else value
    # Formatted by hand: several times faster than strftime on the bulk paths, and glibc's %Y would
    # not zero-pad years below 1000, which would break the fixed width (text order = time order).
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}"
        f".{u.microsecond:06d}Z"
    )


def parse_timestamp(text: str) -> datetime:
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class JsonText(str):
    """JSON already serialised by the caller (e.g. a payload measured for its size): sent as it is,
    text on SQLite and jsonb on PostgreSQL, so a bulk path serialises each value once."""


def dump_json_bytes(value: Any) -> bytes:
    """The one JSON serialiser for stored values: compact UTF-8 JSON (no spaces, non-ASCII characters as
    they are), what `json.dumps(value, ensure_ascii=False, separators=(",", ":"))` writes, as bytes
    (orjson spells a few floats differently, e.g. 1e-7 for 1e-07: the same number).

    Every JSON value the stores write goes through it (JSON parameters on both dialects, the bulk
    statements' `rows`, raw payloads and media, whose size the payload cap measures with it), so what
    is measured, checked and stored is one text.

    orjson does the work. Its one fallback is the standard library encoder, with the same settings, for
    what orjson refuses: integers beyond 64 bits (a media size, a payload field) and dict keys that are
    not strings. Nothing else is accepted: a value that is not JSON (a set, an object, embedded JSON
    next to a value orjson refused) raises TypeError naming orjson's reason, rather than being stored as
    its str(); text with a lone surrogate raises UnicodeEncodeError (neither dialect can store one).
    """
    try:
        return orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError) as refused:
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        except TypeError as exc:
            raise TypeError(f"{exc} (orjson: {refused})") from refused
        return text.encode("utf-8")


def dump_json(value: Any) -> str:
    """`dump_json_bytes` as text (what a TEXT column or a JsonText parameter takes)."""
    return dump_json_bytes(value).decode("utf-8")


_PASS_THROUGH = frozenset({str, int, float, type(None), bytes, JsonText})


def encode_sqlite_value(value: Any) -> Any:
    kind = type(value)
    if kind in _PASS_THROUGH:
        return value
    if kind is bool:
        return int(value)
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, dict | list):
        return dump_json(value)
    return value


def encode_sqlite_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    if not params:
        return {}
    encoded = dict(params)
    for key, value in encoded.items():
        if type(value) not in _PASS_THROUGH:
            encoded[key] = encode_sqlite_value(value)
    return encoded


def _convert_timestamp(raw: bytes) -> datetime:
    return parse_timestamp(raw.decode("utf-8"))


def _convert_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        # orjson stops at 64-bit integers and rejects lone surrogates; the stdlib parser takes both.
        return json.loads(raw.decode("utf-8", "surrogatepass"))


def _convert_bool(raw: bytes) -> bool:
    return raw not in (b"0", b"")


_registered = False


def register_sqlite_converters() -> None:
    """Teach sqlite3 (PARSE_DECLTYPES) our declared types. Idempotent; converters are process-global."""
    global _registered
    if _registered:
        return
    sqlite3.register_converter("TIMESTAMP_TEXT", _convert_timestamp)
    sqlite3.register_converter("JSON_TEXT", _convert_json)
    sqlite3.register_converter("BOOLEAN_INT", _convert_bool)
    _registered = True


def adapt_pg_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    from psycopg.types.json import Jsonb

    if not params:
        return {}
    adapted: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, JsonText):
            adapted[key] = Jsonb(value, dumps=_identity)
        elif isinstance(value, dict | list):
            adapted[key] = Jsonb(value, dumps=dump_json_bytes)  # psycopg sends the bytes as they are
        elif isinstance(value, datetime) and (value.tzinfo is None or value.utcoffset() is None):
            raise NaiveDatetimeError(
                f"parameter {key!r} is a naive datetime; timestamps must be timezone-aware"
            )
        else:
            adapted[key] = value
    return adapted


def _identity(text: str) -> str:
    return text
