"""Processing: the `process` coordinator that turns raw messages into processed documents with several
workers at once, and the processors it drives (the LLM one and the offline extractive one)."""

from tg_parser.processing.coordinator import ProcessCoordinator, ProcessOptions, ProcessReport, dry_run
from tg_parser.processing.processor import PROCESSOR_VERSION, LlmDocumentProcessor

__all__ = [
    "PROCESSOR_VERSION",
    "LlmDocumentProcessor",
    "ProcessCoordinator",
    "ProcessOptions",
    "ProcessReport",
    "dry_run",
]
