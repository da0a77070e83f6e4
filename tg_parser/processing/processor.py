"""Turning one raw message into one processed document.

A processor has a `model` and a `prompt_id` (recorded on every document) and a `process(message, stop)`
method that returns a ProcessedDocument or raises an LlmError. The coordinator only sees this surface, so
another processor (an offline extractive one, say) can run through the same coordinator.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from tg_parser.domain.models import Entity, ProcessedDocument
from tg_parser.llm.client import LlmClient
from tg_parser.llm.prompting import Prompt, estimate_tokens, load_prompt
from tg_parser.llm.structured import StructuredFormat
from tg_parser.processing.schema import ProcessedDocumentOutput, processed_document_format

# Bumped when the way documents are built changes (not the prompt: that has its own id).
PROCESSOR_VERSION = "process-1"
PROMPT_NAME = "process_document"
PROMPT_FIELDS = ("message_type", "date", "text")


class EmptyMessage(Exception):
    """The message has no text to process (a media-only post)."""


class Processor(Protocol):
    model: str
    prompt_id: str

    def process(
        self, message: Mapping[str, Any], stop: threading.Event | None = None
    ) -> ProcessedDocument: ...

    def estimate_input_tokens(self, message: Mapping[str, Any]) -> int: ...


def iso_utc(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def message_input(prompt: Prompt, message: Mapping[str, Any]) -> str:
    return prompt.render(
        message_type=message.get("message_type") or "post",
        date=iso_utc(message["date"]),
        text=message.get("text") or "",
    )


class LlmDocumentProcessor:
    """The LLM processor: one structured-output request per message."""

    def __init__(self, client: LlmClient | None, prompt: Prompt, *, model: str | None = None) -> None:
        """`client` may be None for estimates only (--dry-run needs no key); then `model` names the model."""
        self.client = client
        self.prompt = prompt
        self.model = client.config.model if client is not None else (model or "")
        self.prompt_id = prompt.prompt_id
        self.format: StructuredFormat = processed_document_format()

    @classmethod
    def load(
        cls, client: LlmClient | None, prompts_dir: Path | None = None, *, model: str | None = None
    ) -> LlmDocumentProcessor:
        return cls(client, load_prompt(PROMPT_NAME, prompts_dir, placeholders=PROMPT_FIELDS), model=model)

    def process(self, message: Mapping[str, Any], stop: threading.Event | None = None) -> ProcessedDocument:
        if not (message.get("text") or "").strip():
            raise EmptyMessage(message["source_ref"])
        if self.client is None:
            raise RuntimeError("this processor was built for estimates only (no LLM client)")
        result = self.client.complete(
            self.format, self.prompt.system, message_input(self.prompt, message), stop=stop
        )
        output: ProcessedDocumentOutput = result.output
        return ProcessedDocument(
            source_ref=message["source_ref"],
            channel_id=message["channel_id"],
            message_date=message["date"],
            text_clean=output.text_clean.strip(),
            summary=output.summary.strip() or None,
            topics=normalise_topics(output.topics),
            entities=dedupe_entities(output.entities),
            language=output.language,
            model=self.model,
            prompt_id=self.prompt_id,
            pipeline_version=PROCESSOR_VERSION,
            input_tokens=result.usage.input_tokens,
            output_tokens=result.usage.output_tokens,
            metadata={
                "api": result.api,
                "reply_model": result.model,
                "attempts": result.attempts,
                "reasoning_tokens": result.usage.reasoning_tokens,
                "message_type": message.get("message_type"),
                "edit_date": iso_utc(message["edit_date"]) if message.get("edit_date") else None,
            },
        )

    def estimate_input_tokens(self, message: Mapping[str, Any]) -> int:
        """Instructions + schema + this message, roughly (for --dry-run)."""
        fixed = estimate_tokens(self.prompt.system) + estimate_tokens(str(self.format.schema))
        return fixed + estimate_tokens(message_input(self.prompt, message))


def normalise_topics(topics: list[str]) -> list[str]:
    """Lowercase, trimmed, without '#', de-duplicated in order."""
    seen: dict[str, None] = {}
    for topic in topics:
        clean = " ".join(topic.strip().lstrip("#").split()).lower()
        if clean:
            seen.setdefault(clean, None)
    return list(seen)[:10]


def dedupe_entities(entities: list[Any]) -> list[Entity]:
    """One entity per (type, value), keeping the highest confidence, in first-seen order."""
    best: dict[tuple[str, str], Entity] = {}
    for entity in entities:
        value = " ".join(entity.value.split())
        key = (entity.type, value.casefold())
        if key not in best or entity.confidence > best[key].confidence:
            best[key] = Entity(type=entity.type, value=value, confidence=entity.confidence)
    return list(best.values())
