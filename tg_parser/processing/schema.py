"""Structured outputs: the pydantic models the LLM must fill, and the strict JSON Schemas sent for them.

The schema sent to the model is generated from the pydantic model (one source of truth), reshaped to
the strict subset OpenAI's Structured Outputs accept: every object closed (`additionalProperties:
false`), every property listed in `required`, `$ref`s inlined, no `default`/`title` noise. Replies are
validated with the same pydantic model whatever the server claims, because some OpenAI-compatible
servers accept a schema without enforcing it.

Only keywords the strict mode supports are used: `pattern` (not `minLength`) for non-empty strings,
`minimum`/`maximum` for numbers, `maxItems` for arrays, `enum` for closed sets.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

EntityType = Literal[
    "person",
    "organization",
    "location",
    "product",
    "event",
    "date",
    "money",
    "url",
    "email",
    "phone",
    "mention",
    "hashtag",
    "cashtag",
    "other",
]


class EntityOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: EntityType = Field(description="What kind of entity this is.")
    value: str = Field(
        pattern=r"\S", description="The entity as written in the message (normalised spacing)."
    )
    confidence: float = Field(ge=0.0, le=1.0, description="How sure you are, from 0 to 1.")


class ProcessedDocumentOutput(BaseModel):
    """What the model returns for one message (schema name: processed_document)."""

    model_config = ConfigDict(extra="forbid")

    text_clean: str = Field(
        pattern=r"\S",
        description="The message text without markup, signatures, ads or link clutter; never empty.",
    )
    summary: str = Field(description="One or two sentences in the message's own language.")
    topics: list[str] = Field(max_length=10, description="Up to 10 short topic labels, lowercase.")
    entities: list[EntityOutput] = Field(description="Named entities found in the text.")
    language: str = Field(
        pattern=r"^([a-z]{2}|und)$", description="ISO-639-1 code of the message language, 'und' if unknown."
    )


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


def processed_document_format() -> StructuredFormat:
    return structured_format("processed_document", ProcessedDocumentOutput)


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
