"""The JSON Schemas shipped with the package, and validation of exported files against them."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
SCHEMA_NAMES = ("kb_message_entry", "kb_topic_entry", "topics", "topic_file")


@cache
def load_schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))


def schema_for_entry(entry: dict[str, Any]) -> str:
    return "kb_topic_entry" if entry.get("type") == "topic" else "kb_message_entry"
