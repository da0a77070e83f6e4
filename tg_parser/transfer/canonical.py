"""One canonical rendering of every value, shared by the SQLite and the PostgreSQL side of a checksum.

A row is rendered as the concatenation of its values in column order. Each value is one field that
says what it is and where it ends, so NULL differs from the empty string and no value can bleed into
the next one:

=========  ==========================================  =========================================
kind       field                                       example
=========  ==========================================  =========================================
NULL       ``N``                                       ``N``
integer    ``I`` decimal ``;``                         ``I-42;``
boolean    ``B0`` / ``B1``                             ``B1``
timestamp  ``D`` fixed-width UTC text (27 characters)  ``D2025-01-02T03:04:05.123456Z``
real       ``R`` 16 hex digits of the IEEE-754 double   ``R3fb999999999999a``
text       ``T`` text with ``\\`` doubled, then ``\\;``   ``Ta\\\\b\\;`` for ``a\\b``
JSON       ``J`` canonical JSON, ``\\`` doubled, ``\\;``   ``J{"a": 1}\\;``
=========  ==========================================  =========================================

(After doubling every backslash, the first lone ``\\;`` ends the field.) Every field refers to its value
once, so PostgreSQL converts each jsonb to text once per row, without a subquery fence, and may scan
in parallel.

The canonical JSON is the text PostgreSQL's `jsonb` prints: object keys ordered by UTF-8 byte length,
then bytes (jsonb's storage order), duplicate keys reduced to the last one, `", "` and `": "`
separators, strings escaped as jsonb escapes them (`\\"`, `\\\\`, `\\b\\f\\n\\r\\t`, other control
characters as lower-case `\\u00XX`, everything else literal), numbers as PostgreSQL `numeric` prints
them (`1.0` stays `1.0`, `1e2` becomes `100`, `1.50` stays `1.50`, `-0` becomes `0`). PostgreSQL
produces it with `col::text`; `canonical_json()` produces it from the JSON text stored in SQLite.

The row hash is the MD5 of the UTF-8 rendering read as a 128-bit big-endian integer; a table's checksum
is the sum of its row hashes modulo 2**128, which does not depend on row order, so both sides may scan
in whatever order is cheapest.

JSON that PostgreSQL would refuse (`NaN`, a `\\u0000` escape, an unpaired surrogate, a number beyond
`numeric`'s range) raises `JsonRejected` with the reason.

UTF-8 bytes are first offered to `_jsonb`, a compiled fast path built with the package (`_jsonb.c`,
about ten times faster). It renders plain, valid JSON only and answers None for everything else —
malformed or refused JSON, exponents, negative zero, duplicate keys, `\\u0000`, deep nesting — which
this module then decides. This module is the reference; without a C compiler the package still works,
only slower.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

try:
    from tg_parser.transfer import _jsonb
except ImportError:  # pragma: no cover - the package was built without a C compiler
    _jsonb = None

MOD = 1 << 128


class JsonRejected(ValueError):
    """JSON text that PostgreSQL's jsonb would reject (or that is not JSON at all)."""


# --- JSON ------------------------------------------------------------------------------------------


class _RawNumber:
    """A JSON number whose numeric text has no exact `float` twin (e.g. `1.50`, `1e-7`)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _unknown(value: Any) -> Any:
    raise TypeError(type(value).__name__)  # a _RawNumber: render this document the slow way


# The C encoder with these settings escapes strings exactly as PostgreSQL's escape_json() does:
# \" \\ \b \f \n \r \t, other control characters as lower-case \u00XX, everything else literal.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
if _c_make_encoder is not None:
    _c_encode = _c_make_encoder(
        None, _unknown, json.encoder.encode_basestring, None, ": ", ", ", False, False, False
    )

    def _encode(value: Any) -> str:
        return "".join(_c_encode(value, 0))

else:  # pragma: no cover - CPython always has the C encoder
    _encode = json.JSONEncoder(
        ensure_ascii=False, separators=(", ", ": "), allow_nan=False, check_circular=False, default=_unknown
    ).encode


def _utf8_length(key: str) -> int:
    return len(key.encode("utf-8", "surrogatepass"))


# Telegram payloads repeat a handful of object shapes millions of times: remember each shape's order.
_orders: dict[tuple[str, ...], tuple[str, ...]] = {}


def _jsonb_object(obj: dict[str, Any]) -> dict[str, Any]:
    # The C scanner already kept one value per key (the last, as jsonb does). jsonb orders keys by
    # byte length, then bytewise; UTF-8 byte order equals code point order, so str order serves.
    if len(obj) < 2:
        return obj
    shape = tuple(obj)
    order = _orders.get(shape)
    if order is None:
        keys = sorted(obj)
        keys.sort(key=len if "".join(keys).isascii() else _utf8_length)  # stable: bytewise within a length
        order = tuple(keys)
        if len(_orders) < 8192:
            _orders[shape] = order
    if order == shape:
        return obj
    return {key: obj[key] for key in order}


# numeric's limits: up to 131072 digits before the point, 16383 after.
_MAX_ADJUSTED = 131071
_MIN_EXPONENT = -16383


def numeric_text(text: str) -> str:
    """A JSON number as PostgreSQL `numeric` prints it (what jsonb keeps)."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise JsonRejected(f"invalid number {text[:40]!r}") from None
    if not value.is_finite():
        raise JsonRejected(f"{text[:40]!r} is not a JSON number")
    if value.adjusted() > _MAX_ADJUSTED or value.as_tuple().exponent < _MIN_EXPONENT:  # type: ignore[operator]
        raise JsonRejected(f"number {text[:40]!r} is outside PostgreSQL numeric's range")
    rendered = format(value, "f")
    if rendered.startswith("-") and value.is_zero():
        rendered = rendered[1:]  # numeric has no negative zero
    return rendered


def _plain_decimal(text: str) -> bool:
    # Digits with a fraction and no exponent: numeric prints such a number exactly as it is written
    # (`1.50` stays `1.50`), except a negative zero, which loses its sign.
    return (
        len(text) <= 64
        and "e" not in text
        and "E" not in text
        and not (text[0] == "-" and not text.strip("-0."))
    )


def _number(text: str) -> Any:
    # The JSON scanner calls this for every number with a fraction or an exponent. Its canonical text
    # is kept verbatim (`_RawNumber`); both encoders print it as it is.
    if _plain_decimal(text):
        return _RawNumber(text)
    rendered = numeric_text(text)
    if "." not in rendered:
        return int(rendered)  # 1e2 → 100, printed as numeric prints it
    return _RawNumber(rendered)


def _reject_constant(name: str) -> Any:
    raise JsonRejected(f"{name} is not valid JSON")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _refusal(value: Any, strip_nuls: bool) -> str | None:
    """Why PostgreSQL refuses a document for what its strings hold, whatever becomes of them."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            return "contains an unpaired UTF-16 surrogate escape (\\ud800-\\udfff)"
        if "\x00" in value and not strip_nuls:
            return "contains \\u0000, which PostgreSQL cannot store in jsonb"
        return None
    if isinstance(value, dict):
        items: Any = (part for pair in value.items() for part in pair)
    elif isinstance(value, list | tuple):
        items = value
    else:
        return None
    for item in items:
        reason = _refusal(item, strip_nuls)
        if reason:
            return reason
    return None


def _pairs_hook(strip_nuls: bool) -> Any:
    def jsonb_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) < len(pairs):
            # jsonb keeps the last of duplicate keys, but it refuses the document for what a value it
            # drops holds (`{"a": "\u0000", "a": 1}`), so every value of such an object is looked at.
            reason = _refusal(pairs, strip_nuls)
            if reason:
                raise JsonRejected(reason)
        return _jsonb_object(obj)

    return jsonb_pairs


_decoders = {
    strip: json.JSONDecoder(
        object_pairs_hook=_pairs_hook(strip), parse_float=_number, parse_constant=_reject_constant
    )
    for strip in (False, True)
}


def _decode(text: str | bytes, strip_nuls: bool = False) -> Any:
    try:
        return _decoders[strip_nuls].decode(text.decode("utf-8") if isinstance(text, bytes) else text)
    except JsonRejected:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, int limits
        raise JsonRejected(f"malformed JSON: {exc}") from None


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def strip_nul(value: Any) -> Any:
    """The same JSON value with every NUL character removed from its strings and keys.

    Keys that become equal after stripping collapse to the later one, as jsonb would keep it.
    """
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        stripped: dict[str, Any] = {}
        for key, item in value.items():
            stripped[key.replace("\x00", "")] = strip_nul(item)
        return _jsonb_object(stripped)
    if isinstance(value, list):
        return [strip_nul(item) for item in value]
    return value


def _render_slow(value: Any, out: list[str]) -> None:
    # Only for documents holding a number without an exact float twin; everything else uses _encode.
    if isinstance(value, _RawNumber):
        out.append(value.text)
    elif isinstance(value, dict):
        out.append("{")
        for position, (key, item) in enumerate(value.items()):
            if position:
                out.append(", ")
            out.append(_encode(key))
            out.append(": ")
            _render_slow(item, out)
        out.append("}")
    elif isinstance(value, list):
        out.append("[")
        for position, item in enumerate(value):
            if position:
                out.append(", ")
            _render_slow(item, out)
        out.append("]")
    else:
        out.append(_encode(value))


def render_json_value(value: Any) -> str:
    """The canonical text of an already decoded (jsonb-ordered) value."""
    try:
        return _encode(value)
    except TypeError:  # a _RawNumber somewhere: the C encoder cannot print it verbatim
        out: list[str] = []
        _render_slow(value, out)
        return "".join(out)


# The fast encoder: orjson escapes strings exactly as jsonb does (the same set as the C encoder above,
# checked by the tests) and prints a _RawNumber verbatim through a Fragment. Its compact output
# (`,` and `:`) is not jsonb's (`, ` and `: `), but its indented output uses `": "` and puts every
# other separator on a line break; JSON text holds no raw line break outside them (strings escape
# it), so removing each break with its indentation, and turning `,` + break into `, `, gives jsonb's text.
_Fragment = getattr(orjson, "Fragment", None)  # orjson >= 3.9.16
_INDENT = orjson.OPT_INDENT_2
_COMMA_BREAK = re.compile(rb",\n *")
_BREAK = re.compile(rb"\n *")


def _fragment(value: Any) -> Any:
    if isinstance(value, _RawNumber) and _Fragment is not None:
        return _Fragment(value.text)
    raise TypeError(type(value).__name__)


def _render_bytes(value: Any) -> bytes:
    """The canonical UTF-8 text of a decoded value; raises UnicodeEncodeError for lone surrogates."""
    if _Fragment is not None:
        try:
            out = orjson.dumps(value, default=_fragment, option=_INDENT)
        except TypeError:  # integers beyond 64 bits, surrogates: the stdlib path decides
            pass
        else:
            return _BREAK.sub(b"", _COMMA_BREAK.sub(b", ", out)) if b"\n" in out else out
    return render_json_value(value).encode()


def parse_json(text: str | bytes) -> Any:
    """Decode JSON text the way jsonb would keep it (key order, duplicates, numbers)."""
    return _decode(text)


def _canonical(text: str | bytes, strip_nuls: bool) -> bytes:
    # The fast path refuses (None) any text holding \u0000, so its answer holds for strip_nuls too.
    if _jsonb is not None and text.__class__ is bytes:
        fast = _jsonb.canonical(text)
        if fast is not None:
            return fast  # type: ignore[no-any-return]
    value = _decode(text, strip_nuls)
    marker = "\\u0000" if isinstance(text, str) else b"\\u0000"
    if marker in text and _has_nul(value):  # type: ignore[operator]
        if not strip_nuls:
            raise JsonRejected("contains \\u0000, which PostgreSQL cannot store in jsonb")
        value = strip_nul(value)
    try:
        return _render_bytes(value)
    except UnicodeEncodeError:
        raise JsonRejected("contains an unpaired UTF-16 surrogate escape (\\ud800-\\udfff)") from None


def canonical_json(text: str | bytes, *, strip_nuls: bool = False) -> str:
    """The text PostgreSQL prints for `text::jsonb`, computed without PostgreSQL.

    Raises JsonRejected for input jsonb would refuse. With `strip_nuls`, NUL characters (`\\u0000`)
    are removed from strings instead of being refused.
    """
    return _canonical(text, strip_nuls).decode()


# Short JSON values repeat a lot (tag lists, entity lists, small metadata objects): their fields are
# remembered, keyed by the exact stored bytes. Bounded: cleared when full.
_FIELD_CACHE: dict[bytes, bytes] = {}
_CACHE_VALUE_BYTES = 256
_CACHE_ENTRIES = 8192


def json_field(text: str | bytes, *, strip_nuls: bool = False) -> bytes:
    """The UTF-8 row-rendering field (`J…\\;`) of one JSON value."""
    if _jsonb is not None and text.__class__ is bytes:
        fast = _jsonb.json_field(text)
        if fast is not None:
            return fast  # type: ignore[no-any-return]
    cacheable = not strip_nuls and text.__class__ is bytes and len(text) <= _CACHE_VALUE_BYTES
    if cacheable:
        known = _FIELD_CACHE.get(text)  # type: ignore[arg-type]
        if known is not None:
            return known
    result = b"J" + _canonical(text, strip_nuls).replace(b"\\", b"\\\\") + b"\\;"
    if cacheable:
        if len(_FIELD_CACHE) >= _CACHE_ENTRIES:
            _FIELD_CACHE.clear()
        _FIELD_CACHE[text] = result  # type: ignore[index]
    return result


# --- values and rows ---------------------------------------------------------------------------------


_TAGS = {"int": b"I", "bool": b"B", "ts": b"D", "real": b"R", "text": b"T", "json": b"J"}


def field(kind: str, text: str | None) -> bytes:
    """One value's field in a row rendering, from its canonical text (None for NULL)."""
    if text is None:
        return b"N"
    encoded = text.encode()
    if kind == "int":
        return b"I" + encoded + b";"
    if kind in ("text", "json"):
        return _TAGS[kind] + encoded.replace(b"\\", b"\\\\") + b"\\;"
    return _TAGS[kind] + encoded


def real_text(value: float) -> str:
    return struct.pack(">d", value).hex()


def real_field(value: float | int) -> bytes:
    """The field of a REAL value (a SQLite REAL column may hold an integer)."""
    return b"R" + struct.pack(">d", value).hex().encode()


def row_hash(rendering: bytes) -> int:
    return int.from_bytes(hashlib.md5(rendering, usedforsecurity=False).digest(), "big")


def combine_pg_sums(high: Any, low: Any, negative_lows: Any) -> int:
    """The 128-bit sum from PostgreSQL's exact sums of the two 64-bit halves read as signed bigints.

    sum(unsigned) = sum(hi) * 2**64 + sum(lo) + 2**64 * (how many lo were negative); the 2**128 that the
    high halves' signs contribute vanishes modulo 2**128.
    """
    return (int(high or 0) * 2**64 + int(low or 0) + 2**64 * int(negative_lows or 0)) % MOD


def format_checksum(value: int) -> str:
    return f"{value % MOD:032x}"
