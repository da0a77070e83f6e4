"""The compiled fast path `_jsonb` against its reference, canonical.py's pure-Python path, and PostgreSQL.

Its contract: for any bytes, `_jsonb.canonical` / `_jsonb.json_field` return None (canonical.py then
decides) or exactly what the pure-Python path returns. The documents come from a seeded generator of JSON
text (whitespace, escapes, key orders and number spellings as a writer may choose them) and from random
damage done to them; the reference is canonical.py with its `_jsonb` hook switched off.
"""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psycopg
import pytest

from tg_parser.db.codec import dump_json
from tg_parser.db.connect import pg_target
from tg_parser.transfer import canonical
from tg_parser.transfer.canonical import JsonRejected

try:
    from tg_parser.transfer import _jsonb
except ImportError:  # reported by test_transfer_extensions.py
    _jsonb = None

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_migrate.py"

Reference = Callable[[bytes], tuple[bytes, bytes] | None]


# --- the two paths -----------------------------------------------------------------------------------


@pytest.fixture
def fast():
    if _jsonb is None:
        pytest.skip("the C fast path is not built (see test_extension_is_built_and_current)")
    return _jsonb


@pytest.fixture
def reference(monkeypatch: pytest.MonkeyPatch) -> Reference:
    """canonical.py's own answer with the fast path switched off: (canonical text, row field), or None
    when it refuses the input (JsonRejected)."""
    monkeypatch.setattr(canonical, "_jsonb", None)
    monkeypatch.setattr(canonical, "_FIELD_CACHE", {})

    def answer(data: bytes) -> tuple[bytes, bytes] | None:
        assert canonical._jsonb is None
        try:
            text = canonical.canonical_json(data).encode()
        except JsonRejected:
            with pytest.raises(JsonRejected):
                canonical.json_field(data)
            return None
        return text, canonical.json_field(data)

    return answer


def _show(data: bytes) -> str:
    return repr(data) if len(data) <= 300 else f"{data[:150]!r}…{data[-150:]!r} ({len(data)} bytes)"


def check(fast, reference: Reference, data: bytes) -> str:
    """Assert the contract for one input. Says who answered: "fast" (the C path, in both forms),
    "python" (canonical.py, the C path declined at least one form) or "refused" (JsonRejected)."""
    text = fast.canonical(data)
    row_field = fast.json_field(data)
    expected = reference(data)
    if expected is None:
        assert text is None, f"canonical.py refuses {_show(data)}, the C path answered {text!r}"
        assert row_field is None, f"canonical.py refuses {_show(data)}, the C path answered {row_field!r}"
        return "refused"
    if text is not None:
        assert text == expected[0], f"canonical() differs for {_show(data)}"
    if row_field is not None:
        assert row_field == expected[1], f"json_field() differs for {_show(data)}"
    return "fast" if text is not None and row_field is not None else "python"


# --- a generator of JSON text --------------------------------------------------------------------------

SPACES = ["", "", "", "", " ", " ", "  ", "\n", "\t", "\r\n", " \n\t\r "]
SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "/": "\\/",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}
# Characters strings are made of: ASCII, the characters JSON or jsonb escape, DEL and C1 controls (printed
# as they are), two- to four-byte UTF-8 (Latin, Cyrillic, CJK, emoji, the last code point), U+2028/2029,
# the BOM and non-characters.
TEXT_CHARS = [
    *"abcxyzABZ0189 _-.,:;{}[]'",
    *'"\\/',
    *"\b\f\n\r\t",
    "\x01",
    "\x07",
    "\x1b",
    "\x1f",
    "\x7f",
    "\x80",
    "\x9f",
    "\xa0",
    "é",
    "ñ",
    "ß",
    "Ж",
    "я",
    "中",
    "\u2028",
    "\u2029",
    "\ufeff",
    "\ufffe",
    "\uffff",
    "\ue000",
    "😀",
    "👍",
    "\U00010000",
    "\U0010ffff",
]
# Keys draw from few characters and short lengths, so objects hold many keys of equal byte length (the
# order jsonb gives them is then bytewise) and keys whose character count and byte length disagree.
KEY_CHARS = ["a", "b", "z", "A", "_", "1", "é", "Ж", "中", "😀", " ", '"', "\\", "/", "\n", "\x7f"]
KEY_LENGTHS = [0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 4, 5, 8, 16, 40]


def _hex_escape(rng: random.Random, code: int) -> str:
    return "\\u" + format(code, "04x" if rng.random() < 0.5 else "04X")


def json_string(rng: random.Random, text: str) -> str:
    """`text` as a JSON string literal, each character spelled one of the ways JSON allows."""
    out = ['"']
    for char in text:
        code = ord(char)
        roll = rng.random()
        if char in '"\\' or code < 0x20:  # must be escaped
            out.append(
                SHORT_ESCAPES[char] if char in SHORT_ESCAPES and roll < 0.7 else _hex_escape(rng, code)
            )
        elif code >= 0x10000:  # literal, or a surrogate pair
            if roll < 0.3:
                code -= 0x10000
                out.append(
                    _hex_escape(rng, 0xD800 + (code >> 10)) + _hex_escape(rng, 0xDC00 + (code & 0x3FF))
                )
            else:
                out.append(char)
        elif char == "/" and roll < 0.3:
            out.append("\\/")
        elif roll < 0.1:
            out.append(_hex_escape(rng, code))
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


# Spellings of numbers canonical.py hands to numeric's rules, or refuses: exponents, negative zeros,
# numbers beyond what the fast path prints verbatim, beyond Python's int limit, beyond numeric's range.
ODD_NUMBERS = [
    "1e2",
    "1E-7",
    "-1.5e+3",
    "0e0",
    "2.50E1",
    "-0",
    "-0.0",
    "-0.000",
    "-0e5",
    "1e400",
    "1e-400",
    "1e999999",
    "-1e-999999",
    "0." + "0" * 70 + "1",
    "1" * 40 + "." + "5" * 30,
    "9" * 1001,
    "-" + "1" * 1500,
    "7" * 5000,
]
# Spellings that are not JSON at all.
NOT_JSON = [
    "NaN",
    "-Infinity",
    "Infinity",
    "nul",
    "tru",
    "01",
    "1.",
    ".5",
    "+1",
    "-",
    "0x10",
    "1e",
    "'a'",
    "[1,]",
]


def json_number(rng: random.Random, odd: bool) -> str:
    if odd and rng.random() < 0.3:
        return rng.choice(ODD_NUMBERS)
    kind = rng.random()
    if kind < 0.35:
        return str(rng.randint(-1000, 1000))
    if kind < 0.45:  # around the 64-bit limits, and beyond
        return str(
            rng.choice([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1]) + rng.randint(-2, 2)
        )
    if kind < 0.55:
        digits = rng.choice([17, 18, 19, 20, 30, 60, 200, 500])
        return rng.choice(["", "-"]) + str(rng.randint(1, 9)) + "".join(rng.choices("0123456789", k=digits))
    if kind < 0.8:  # decimals as written: 1.50, -0.5, 0.0, 123.4500
        whole = rng.choice(["0", "0", "1", str(rng.randint(1, 10**6)), str(rng.randint(1, 10**30))])
        fraction = "".join(rng.choices("0123456789", k=rng.choice([1, 1, 2, 3, 6, 15, 30])))
        if rng.random() < 0.3:
            fraction += "0" * rng.randint(1, 5)
        text = f"{whole}.{fraction}"
        if rng.random() < 0.3 and text.strip("0."):
            text = "-" + text
        return text if odd or len(text) <= 64 else text[:64].rstrip(".")
    value = round(rng.uniform(-1000, 1000), rng.randint(0, 8)) if kind < 0.9 else rng.random()
    if not odd:
        value = abs(value) if value == 0 else value  # no negative zero
    text = orjson.dumps(value).decode()  # what Python writes for a float (may use an exponent)
    if "e" in text.lower() and not odd:
        return text.lower().split("e")[0]
    return text


# How likely a value at each depth is an object or an array (the rest are scalars): documents reach
# eight levels now and then; half are under 400 bytes, a few reach tens of kilobytes.
CONTAINER_CHANCE = [0.9, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.1, 0.0]


class Generator:
    """Seeded random JSON documents as text.

    Plain documents hold what canonical.py renders as it is written, the fast path's case: distinct keys
    (once decoded), no `\\u0000`, no unpaired surrogate, no exponent, no negative zero, no number beyond
    64 characters with a fraction, no integer beyond 501 digits. Odd documents add duplicate keys, those escapes,
    the numbers of ODD_NUMBERS and a few texts that are not JSON.
    """

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def space(self) -> str:
        return self.rng.choice(SPACES)

    def text(self, odd: bool, size: int) -> str:
        rng = self.rng
        chars = rng.choices(TEXT_CHARS, k=size)
        literal = json_string(rng, "".join(chars))
        if odd and rng.random() < 0.2:  # an escape canonical.py refuses, or a lone surrogate
            spot = rng.randint(1, len(literal) - 1)
            while literal[spot - 1] == "\\":  # not inside an escape
                spot -= 1
            bad = rng.choice(["\\u0000", "\\ud800", "\\uDBFF", "\\udc00", "\\udc00\\ud800", "\\ud83d\\u0041"])
            literal = literal[:spot] + bad + literal[spot:]
        return literal

    def key(self) -> str:
        return "".join(self.rng.choices(KEY_CHARS, k=self.rng.choice(KEY_LENGTHS)))

    def scalar(self, odd: bool) -> str:
        roll = self.rng.random()
        if roll < 0.35:
            return self.text(odd, self.rng.choice([0, 1, 2, 5, 10, 30, 100]))
        if roll < 0.75:
            return json_number(self.rng, odd)
        return self.rng.choice(["true", "false", "null"])

    def value(self, odd: bool, depth: int) -> str:
        rng = self.rng
        roll = rng.random()
        if roll >= CONTAINER_CHANCE[min(depth, len(CONTAINER_CHANCE) - 1)]:
            return self.scalar(odd)
        if depth == 0 and rng.random() < 0.05:
            size = rng.randint(65, 90)  # more members than the C path sorts by insertion
        else:
            size = rng.choice([0, 1, 1, 2, 2, 3, 3, 4, 5, 8, 12])
        if roll < 0.6 * CONTAINER_CHANCE[min(depth, len(CONTAINER_CHANCE) - 1)]:
            return self.obj(odd, depth, size)
        items = [self.value(odd, depth + 1) for _ in range(size)]
        return self.container("[", "]", items)

    def obj(self, odd: bool, depth: int, size: int) -> str:
        rng = self.rng
        keys: list[str] = []
        for _ in range(size):
            if odd and keys and rng.random() < 0.15:
                keys.append(rng.choice(keys))  # a duplicate, maybe spelled differently
            else:
                key = self.key()
                if key not in keys:
                    keys.append(key)
        members = [
            f"{json_string(rng, k)}{self.space()}:{self.space()}{self.value(odd, depth + 1)}" for k in keys
        ]
        return self.container("{", "}", members)

    def container(self, opening: str, closing: str, items: list[str]) -> str:
        if not items:
            return opening + self.space() + closing
        inner = (self.space() + "," + self.space()).join(items)
        return opening + self.space() + inner + self.space() + closing

    def document(self, odd: bool = False) -> bytes:
        rng = self.rng
        body = self.scalar(odd) if rng.random() < 0.1 else self.value(odd, 0)
        if odd and rng.random() < 0.05:
            body = rng.choice(NOT_JSON)
        return (self.space() + body + self.space()).encode()


# Bytes to damage a document with: invalid UTF-8 (stray continuation bytes, lead bytes without their
# continuation, overlong encodings, encoded surrogates, bytes F5-FF, code points beyond U+10FFFF), NUL
# and raw control characters, and fragments of escapes, numbers and structure.
DAMAGE = [
    b"\x80",
    b"\xbf",
    b"\xc0\xaf",
    b"\xc1\xbf",
    b"\xc3",
    b"\xe2\x82",
    b"\xe0\x80\xaf",
    b"\xe0\x9f\xbf",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xf0\x8f\xbf\xbf",
    b"\xf0\x9f\x98",
    b"\xf4\x90\x80\x80",
    b"\xf5",
    b"\xf8",
    b"\xfe",
    b"\xff",
    b"\x00",
    b"\x01",
    b"\x1f",
    b"\n",
    b"\\",
    b"\\u",
    b"\\u12",
    b"\\ud800",
    b"\\udfff",
    b"\\u0000",
    b"\\x41",
    b"\\U0041",
    b'"',
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"-",
    b"0",
    b".",
    b"e5",
    b"1e",
    b"NaN",
    b"tru",
    b"\xef\xbb\xbf",
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        spot = rng.randint(0, len(data))
        roll = rng.random()
        if roll < 0.25:
            data = data[:spot] + rng.choice(DAMAGE) + data[spot:]
        elif roll < 0.45:
            data = data[:spot] + rng.choice(DAMAGE) + data[spot + 1 :]
        elif roll < 0.6:
            data = data[:spot] + bytes([rng.randrange(256)]) + data[spot + 1 :]
        elif roll < 0.75:
            data = data[:spot] + data[spot + rng.randint(1, 4) :]
        elif roll < 0.85:
            data = data[:spot]  # truncated
        else:
            end = min(len(data), spot + rng.randint(1, 20))
            data = data[:end] + data[spot:end] + data[end:]  # a repeated stretch
    return data


# --- the contract on generated and damaged documents ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)  # a large generated set: past 120 s on a loaded 2-core machine
def test_plain_documents_take_the_fast_path_and_match(fast, reference):
    generator = Generator(seed=20240611)
    documents = [generator.document() for _ in range(3000)]
    declined = [data for data in documents if check(fast, reference, data) != "fast"]
    # Plain documents are what the fast path exists for: it must answer nearly all of them.
    assert len(declined) <= 0.05 * len(documents), [_show(data) for data in declined[:5]]


@pytest.mark.slow
def test_odd_documents_match_or_fall_back(fast, reference):
    generator = Generator(seed=77)
    outcomes = {"fast": 0, "python": 0, "refused": 0}
    for _ in range(2000):
        outcomes[check(fast, reference, generator.document(odd=True))] += 1
    # The generator really produces all three kinds of input.
    assert min(outcomes.values()) >= 100, outcomes


@pytest.mark.slow
def test_damaged_documents_match_or_fall_back(fast, reference):
    generator = Generator(seed=5)
    rng = random.Random(6)
    sources = [generator.document(odd=rng.random() < 0.3) for _ in range(600)]
    outcomes = {"fast": 0, "python": 0, "refused": 0}
    for _ in range(8000):
        outcomes[check(fast, reference, mutate(rng, rng.choice(sources)))] += 1
    assert outcomes["fast"] >= 500 and outcomes["refused"] >= 2000, outcomes


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b" ",
        b'"',
        b"{",
        b"[",
        b'{"a"',
        b'{"a":',
        b'{"a":1',
        b'{"a":1,',
        b"[1,",
        b'"\\',
        b'"\\u',
        b'"\\ud83d\\ude0',
        b'"\\ud83d\\',
        b'"\xf0\x9f\x98"',
        b'"\xe2\x82"',
        b'"\xc3"',
        b'"a\x00b"',
        b"\x00",
        b"1\x00",
        b'"\\u0000"',
        b'{"\\u0000": 1}',
        b'"\\ud800"',
        b'"\\udc00"',
        b'"\\ud800\\ud800"',
        b'"\\ud800x"',
        b'"\xed\xa0\x80"',
        b'"\xc0\xaf"',
        b'"\xe0\x80\xaf"',
        b'"\xf4\x90\x80\x80"',
        b'"\xff"',
        b'{"a": 1, "a": 2}',
        b'{"a": 1, "\\u0061": 2}',
        b'{"b": 1, "a": 2, "b": 3}',
        b"-0",
        b"-0.0",
        b"1e2",
        b"NaN",
        b"[Infinity]",
        b"01",
        b"1.",
        b"1 2",
        b"\xef\xbb\xbf{}",
        b"\x0c{}",
        b"{}\x0b",
        b'"\x7f\xc2\x80\xe2\x80\xa8"',
    ],
)
def test_boundary_inputs(fast, reference, data):
    check(fast, reference, data)


# --- a realistic payload -------------------------------------------------------------------------------


def _bench_payloads(count: int) -> list[bytes]:
    spec = importlib.util.spec_from_file_location("bench_migrate_for_tests", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rng = random.Random(11)
    start = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    return [
        dump_json(
            bench._payload(rng, -1001234567890, n, start + timedelta(seconds=37 * n), bench._text(rng))
        ).encode()
        for n in range(1, count + 1)
    ]


def test_telegram_payload_takes_the_fast_path(fast, reference):
    """The payloads the benchmark migrates (orjson-compact Telegram messages) are the fast path's case."""
    checked = 0
    for data in _bench_payloads(50):
        if "e" in orjson.dumps(orjson.loads(data)["score"]).decode():
            continue  # a `score` orjson printed with an exponent: canonical.py does numeric's arithmetic
        assert check(fast, reference, data) == "fast", _show(data)
        checked += 1
    assert checked >= 40


# --- nesting and size ----------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 150, 199, 200, 201, 1000, 5000])
@pytest.mark.parametrize("shape", ["array", "object", "mixed"])
def test_deep_nesting(fast, reference, depth, shape):
    opening = {"array": ["["], "object": ['{"k":'], "mixed": ["[", '{"b": 0, "a":']}[shape]
    closing = {"[": "]", '{"k":': "}", '{"b": 0, "a":': "}"}
    chain = [opening[level % len(opening)] for level in range(depth)]
    data = ("".join(chain) + '"\\n"' + "".join(closing[part] for part in reversed(chain))).encode()
    check(fast, reference, data)


@pytest.mark.slow
def test_large_documents(fast, reference):
    rng = random.Random(3)
    megabyte = "".join(rng.choices("abcdefghij Жя中😀", k=300_000))
    keys = [f"k{n}" for n in range(100_000)]
    rng.shuffle(keys)
    documents = [
        json_string(random.Random(1), megabyte).encode(),  # ~1 MB with scattered escapes
        ('"' + megabyte + '"').encode(),  # ~1 MB as it is printed
        ('"' + "\\n" * 200_000 + '"').encode(),  # every character escaped
        ("{" + ",".join(f'"{key}":{n}' for n, key in enumerate(keys)) + "}").encode(),
        ("[" + ",".join(str(n) for n in range(100_000)) + "]").encode(),
        b"[" + b",".join([b'{"b":1,"a":[1.50,"x\\u0001"]}'] * 20_000) + b"]",
    ]
    for data in documents:
        assert check(fast, reference, data) == "fast", _show(data)
    # Small documents after large ones (the C path keeps its buffers between calls).
    generator = Generator(seed=8)
    for _ in range(200):
        check(fast, reference, generator.document())


# --- PostgreSQL ------------------------------------------------------------------------------------------


@pytest.fixture
def pg(pg_only_settings):
    target = pg_target(pg_only_settings)
    with psycopg.connect(**target.connect_kwargs(), autocommit=True) as conn:
        yield conn


def test_fast_path_equals_jsonb_text(fast, pg):
    generator = Generator(seed=2025)
    sample: list[bytes] = []
    while len(sample) < 200:
        data = generator.document(odd=len(sample) % 4 == 0)
        if fast.canonical(data) is not None:
            sample.append(data)
    sample += _bench_payloads(3)
    sample.append(("[" * 150 + "1" + "]" * 150).encode())
    rows = pg.execute(
        "SELECT x::jsonb::text FROM unnest(%s::text[]) WITH ORDINALITY AS u(x, n) ORDER BY n",
        ([data.decode() for data in sample],),
    ).fetchall()
    assert len(rows) == len(sample)
    for data, (text,) in zip(sample, rows, strict=True):
        assert fast.canonical(data) == text.encode(), _show(data)
