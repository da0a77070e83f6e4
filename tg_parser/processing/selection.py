"""Which processor runs, and building it: one factory for `process`, `run` and `topicize`.

The LLM runs when an endpoint is configured (or PROCESSOR=llm), the offline extractive processor
otherwise. `build_document_processor` gives the document processor with everything its callers need
(the run parameters it records, the options it tunes, the client to close);
`build_topic_strategy` gives topicization's strategy of the same kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from tg_parser.config import Settings

if TYPE_CHECKING:
    from tg_parser.llm.client import LlmClient
    from tg_parser.processing.coordinator import ProcessOptions
    from tg_parser.processing.processor import Processor
    from tg_parser.topics.runner import TopicStrategy

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


@dataclass
class BuiltProcessor:
    """A document processor and what goes with it. Close it (or use `with`) to release its client."""

    kind: ProcessorKind
    processor: Processor
    run_params: dict[str, Any]
    # Output tokens a request may use at most (for estimates); 0 for the extractive processor.
    max_output_tokens: int = 0
    description: str = ""
    client: LlmClient | None = field(default=None, repr=False)

    def tune(self, options: ProcessOptions) -> ProcessOptions:
        """Set the coordinator's batch sizes and threads for this processor."""
        if self.kind == "extractive":
            from tg_parser.processing.extractive import tune_options

            tune_options(options)  # CPU-bound: a few threads, big claims and writes
        return options

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    def __enter__(self) -> BuiltProcessor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_document_processor(
    settings: Settings, kind: ProcessorKind, *, estimate_only: bool = False
) -> BuiltProcessor:
    """The document processor of `kind`. `estimate_only` builds the LLM one without a client (dry runs)."""
    if kind == "extractive":
        from tg_parser.processing.extractive import (
            EXTRACTIVE_MODEL,
            EXTRACTIVE_PROCESSOR_VERSION,
            ExtractiveDocumentProcessor,
        )

        return BuiltProcessor(
            kind,
            ExtractiveDocumentProcessor(),
            {"processor": "extractive", "pipeline_version": EXTRACTIVE_PROCESSOR_VERSION},
            description=f"Processing with {EXTRACTIVE_MODEL}.",
        )
    from tg_parser.processing.processor import PROCESSOR_VERSION, LlmDocumentProcessor

    if estimate_only:
        from tg_parser.llm.client import model_traits

        # No request is sent, but an effort the model rejects would fail the real run: say so now.
        model_traits(settings.llm_model).effort_for(settings.llm_model, settings.llm_reasoning_effort)
        processor = LlmDocumentProcessor.load(None, settings.prompts_dir, model=settings.llm_model)
        return BuiltProcessor(
            kind,
            processor,
            {"processor": "llm", "pipeline_version": PROCESSOR_VERSION},
            max_output_tokens=settings.llm_max_output_tokens,
        )
    from tg_parser.llm.client import LlmClient, LlmConfig

    config = LlmConfig.from_settings(settings)
    client = LlmClient(config)
    try:
        processor = LlmDocumentProcessor.load(client, settings.prompts_dir)
    except BaseException:
        client.close()
        raise
    return BuiltProcessor(
        kind,
        processor,
        {"processor": "llm", "api": config.api, "pipeline_version": PROCESSOR_VERSION},
        max_output_tokens=settings.llm_max_output_tokens,
        description=f"Processing with {config.describe()}, prompt {processor.prompt_id}.",
        client=client,
    )


def build_topic_strategy(settings: Settings, kind: ProcessorKind) -> TopicStrategy:
    """Topicization's strategy of `kind`: hashtag clusters offline, or the LLM."""
    if kind == "extractive":
        from tg_parser.topics.extractive import ExtractiveTopicStrategy

        return ExtractiveTopicStrategy(
            min_documents=settings.topic_min_hashtag_documents, max_anchors=settings.topic_cluster_max_anchors
        )
    from tg_parser.llm.client import LlmClient
    from tg_parser.topics.llm import LlmTopicStrategy

    return LlmTopicStrategy(
        LlmClient.from_settings(settings),
        batch_tokens=settings.topic_batch_tokens,
        prompts_dir=settings.prompts_dir,
    )
