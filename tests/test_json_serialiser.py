"""One JSON serialiser for everything the stores write: db.codec.dump_json_bytes (and its text form
dump_json), orjson with one fallback, the standard library encoder, for what orjson refuses."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tg_parser.db.codec import dump_json, dump_json_bytes
from tg_parser.domain.payload import cap_payload_text

ROOT = Path(__file__).resolve().parent.parent / "tg_parser"


def stdlib(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@pytest.mark.parametrize(
    "value",
    [
        {"a": 'é 👋 "q" \\ \n \x01', "n": [1, None, True, False, 2.5, -3], "o": {}},
        ["x", [], {"k": {"deep": [0]}}],
        {"big": 2**63 - 1, "neg": -(2**63)},  # the edges orjson still takes
    ],
)
def test_compact_utf8_as_the_standard_library_writes_it(value: object) -> None:
    assert dump_json(value) == stdlib(value)
    assert dump_json_bytes(value) == stdlib(value).encode("utf-8")


@pytest.mark.parametrize(
    "value",
    [
        {"size": 2**70, "nested": [{"neg": -(2**65)}], "text": "ü"},  # integers beyond 64 bits
        {1: "a", "b": {2: "c"}},  # keys that are not strings
    ],
)
def test_the_fallback_takes_what_orjson_refuses_with_the_same_settings(value: object) -> None:
    assert dump_json(value) == stdlib(value)
    assert json.loads(dump_json_bytes(value)) == json.loads(stdlib(value))


def test_what_is_not_json_is_refused_naming_orjsons_reason() -> None:
    with pytest.raises(TypeError, match="orjson: "):
        dump_json({"s": {1, 2}})
    with pytest.raises(UnicodeEncodeError):
        dump_json({"lone": "\udc80"})  # neither dialect can store a lone surrogate


def test_the_payload_cap_measures_the_stored_text() -> None:
    payload = {"id": 1, "size": 2**70, "text": "привет"}
    capped = cap_payload_text(payload, dump_json_bytes)
    assert capped.text == dump_json(payload)
    assert capped.original_size == len(dump_json_bytes(payload))


# Storage-side modules: they serialise JSON only through db.codec (not the export's output formatting,
# the CLI's, the logs', nor the transfer package's canonical jsonb text, which are other things).
STORAGE_MODULES = [
    *sorted((ROOT / "stores").glob("*.py")),
    *sorted((ROOT / "domain").glob("*.py")),
    *sorted(p for p in (ROOT / "db").glob("*.py") if p.name != "codec.py"),
    ROOT / "ingestion" / "export_import.py",
    ROOT / "ingestion" / "convert.py",
]


@pytest.mark.parametrize("path", STORAGE_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_storage_modules_serialise_only_through_the_codec(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"\b(?:orjson|json)\.dumps\(", text), f"{path}: use db.codec.dump_json(_bytes)"
