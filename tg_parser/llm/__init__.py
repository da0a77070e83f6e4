"""The LLM client that processing and topicization share: the openai SDK (Responses or Chat Completions),
strict structured outputs, typed errors with retry rules, and prompts as files."""

from tg_parser.llm.client import LlmClient, LlmConfig, LlmResult, Usage
from tg_parser.llm.errors import LlmError
from tg_parser.llm.prompting import Prompt, load_prompt
from tg_parser.llm.structured import StructuredFormat, structured_format

__all__ = [
    "LlmClient",
    "LlmConfig",
    "LlmError",
    "LlmResult",
    "Prompt",
    "StructuredFormat",
    "Usage",
    "load_prompt",
    "structured_format",
]
