"""LLM processing: the client (Responses / Chat Completions over the openai SDK), prompts, and the
`process` pipeline that turns raw messages into processed documents with several workers at once."""

from tg_parser.processing.errors import LlmError
from tg_parser.processing.llm import LlmClient, LlmConfig, LlmResult, Usage
from tg_parser.processing.pipeline import ProcessOptions, ProcessPipeline, ProcessReport, dry_run
from tg_parser.processing.processor import PIPELINE_VERSION, LlmDocumentProcessor
from tg_parser.processing.prompting import Prompt, load_prompt
from tg_parser.processing.schema import StructuredFormat, structured_format

__all__ = [
    "PIPELINE_VERSION",
    "LlmClient",
    "LlmConfig",
    "LlmDocumentProcessor",
    "LlmError",
    "LlmResult",
    "ProcessOptions",
    "ProcessPipeline",
    "ProcessReport",
    "Prompt",
    "StructuredFormat",
    "Usage",
    "dry_run",
    "load_prompt",
    "structured_format",
]
