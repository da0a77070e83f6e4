"""Strict structured outputs: a pydantic model's JSON Schema in the form OpenAI's strict mode accepts.

`structured_format(name, model)` pairs a schema name with the model that validates replies; the client
sends the schema and validates every reply against the model anyway.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class StructuredFormat:
    """A named strict schema and the model that validates replies against it."""

    name: str
    model: type[BaseModel]
    schema: dict[str, Any]


@cache
def structured_format(name: str, model: type[BaseModel]) -> StructuredFormat:
    """The strict format for `model` under `name` (built once per pair)."""
    return StructuredFormat(name=name, model=model, schema=strict_json_schema(model))


# Keywords whose value is a schema, a list of schemas, or a mapping of names to schemas.
_SCHEMA_VALUED = ("items", "not", "additionalProperties")
_SCHEMA_LISTS = ("anyOf", "allOf", "oneOf", "prefixItems")
_SCHEMA_MAPS = ("properties", "$defs", "definitions")


def strict_json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON Schema in the form Structured Outputs' strict mode accepts."""
    raw = model.model_json_schema()
    definitions = {**raw.get("definitions", {}), **raw.get("$defs", {})}
    return _strict(raw, definitions, depth=0)


def _strict(node: dict[str, Any], definitions: dict[str, Any], depth: int) -> dict[str, Any]:
    if depth > 32:
        raise ValueError("schema nesting is too deep (a recursive model cannot be inlined)")
    if "$ref" in node:
        name = str(node["$ref"]).rsplit("/", 1)[-1]
        merged = {**copy.deepcopy(definitions[name]), **{k: v for k, v in node.items() if k != "$ref"}}
        return _strict(merged, definitions, depth + 1)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "default", "$defs", "definitions"):
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _strict(sub, definitions, depth + 1) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [_strict(sub, definitions, depth + 1) for sub in value]
        elif key in _SCHEMA_VALUED and isinstance(value, dict):
            out[key] = _strict(value, definitions, depth + 1)
        else:
            out[key] = value
    if out.get("type") == "object" or "properties" in out:
        out["additionalProperties"] = False
        out["required"] = list(out.get("properties", {}))
    if "allOf" in out and len(out["allOf"]) == 1:
        out = {**out.pop("allOf")[0], **out}
    return out
