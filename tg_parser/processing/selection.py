"""Which processor runs: the LLM when an endpoint is configured, the extractive one otherwise."""

from __future__ import annotations

from typing import Literal

from tg_parser.config import Settings

ProcessorKind = Literal["llm", "extractive"]


def llm_configured(settings: Settings) -> bool:
    return settings.openai_api_key is not None or bool(settings.openai_base_url)


def choose_processor(settings: Settings, override: str | None = None) -> tuple[ProcessorKind, str]:
    """The processor to use and one line that tells the user which ran and why."""
    wanted = (override or settings.processor).lower()
    if wanted == "llm":
        return "llm", f"processor: llm ({settings.llm_model})"
    if wanted == "extractive":
        return "extractive", "processor: extractive (offline, deterministic)"
    if llm_configured(settings):
        return "llm", f"processor: llm ({settings.llm_model}; PROCESSOR=auto found an LLM endpoint)"
    return "extractive", (
        "processor: extractive (no LLM endpoint configured; set OPENAI_API_KEY or OPENAI_BASE_URL to use an LLM)"
    )
