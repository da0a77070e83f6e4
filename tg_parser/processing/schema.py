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

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tg_parser.llm.structured import StructuredFormat, structured_format

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


def processed_document_format() -> StructuredFormat:
    return structured_format("processed_document", ProcessedDocumentOutput)
