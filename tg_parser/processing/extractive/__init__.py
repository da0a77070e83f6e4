"""The extractive processor (`cleaning`, `entities` and `language` hold the extractors): deterministic, offline enrichment of a message (no LLM, no network).

Every field is taken from the message itself, never invented:
* text_clean — Telegram/Markdown/HTML markup removed, URLs kept without tracking parameters,
  whitespace, repeated emoji and repeated punctuation normalised;
* summary — the first sentence, or the first 200 characters cut at a word boundary;
* topics — the message's hashtags, normalised;
* entities — URLs, @mentions, hashtags, e-mails, phone numbers and cashtags (confidence 1.0);
* language — from the script and common words (ISO 639-1, or "und").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tg_parser.domain.ids import doc_id
from tg_parser.domain.models import ProcessedDocument, utcnow
from tg_parser.processing.extractive.cleaning import clean_text, find_urls, strip_tracking, summarize
from tg_parser.processing.extractive.entities import extract_entities, hashtags, normalise_hashtag
from tg_parser.processing.extractive.language import detect_language
from tg_parser.processing.processor import EmptyMessage
from tg_parser.stores.processing import DocumentRow

__all__ = [
    "EXTRACTIVE_MODEL",
    "EXTRACTIVE_PROCESSOR_VERSION",
    "EXTRACTIVE_PROMPT_ID",
    "Extraction",
    "ExtractiveDocumentProcessor",
    "clean_text",
    "detect_language",
    "extract",
    "extract_entities",
    "find_urls",
    "hashtags",
    "normalise_hashtag",
    "strip_tracking",
    "summarize",
    "tune_options",
]

if TYPE_CHECKING:
    from tg_parser.processing.coordinator import ProcessOptions


@dataclass
class Extraction:
    text_clean: str
    summary: str
    topics: list[str]
    entities: list[dict[str, object]] = field(default_factory=list)
    language: str = "und"


def extract(text: str) -> Extraction:
    """Enrich one message; an empty or media-only message yields an empty clean text."""
    cleaned = clean_text(text)
    return Extraction(
        text_clean=cleaned,
        summary=summarize(cleaned),
        topics=hashtags(text or ""),
        entities=extract_entities(text or ""),
        language=detect_language(cleaned),
    )


# --- the processor ------------------------------------------------------------------------------------

# How the coordinator batches for this processor. A message costs tens of microseconds here, not the second
# of an LLM call, so the database round trips dominate unless each covers many messages: 2,000 per
# claim and per write transaction instead of 256 and 100 (~1.5x the documents/s on PostgreSQL).
# Selection pages (the --force walk over raw_messages and the dry run; a normal run claims its batches
# from the pending-work queue) are bigger still: right after a bulk import PostgreSQL's statistics are
# stale and it plans the candidate query as a scan of the whole table (~0.3 s at 200,000 messages)
# instead of a walk along the index, so each page costs as much as the table; 10,000 rows a page (~20 MB
# of short messages) keep that under a tenth of the run. Threads: the work is CPU-bound under one GIL, so one
# worker computes while the coordinator waits on the database and a second covers its hand-offs; more
# only contend for the queues' locks (measured: 2 threads ~1.3x the documents/s of 8 on PostgreSQL).
EXTRACTIVE_BATCH = 2000
EXTRACTIVE_PAGE = 10_000
EXTRACTIVE_THREADS = 2
# Messages a worker takes at once (and returns the results of in one go): a queue round trip costs
# about what a short message does, so a claim goes to the workers in chunks, not one message at a time.
EXTRACTIVE_HAND_OFF = 100
# Each message leaves a few dozen short-lived dicts and lists: a young-generation collection every 20,000
# allocations instead of 700 (measured: ~10 % less CPU per document; with the collector off, hardly less).
EXTRACTIVE_GC_THRESHOLDS = (20_000, 20, 20)


def tune_options(options: ProcessOptions) -> ProcessOptions:
    """Set the coordinator's batch sizes and threads for the extractive processor (`process` and `run`)."""
    options.concurrency = min(options.concurrency, EXTRACTIVE_THREADS)
    options.claim_batch = options.write_batch = EXTRACTIVE_BATCH
    options.hand_off = EXTRACTIVE_HAND_OFF
    options.gc_thresholds = EXTRACTIVE_GC_THRESHOLDS
    options.page_size = EXTRACTIVE_PAGE
    return options


EXTRACTIVE_MODEL = "extractive"
EXTRACTIVE_PROCESSOR_VERSION = "extractive-1"
# Stands where an LLM document has the hash of its prompt: bumped when the extractors change.
EXTRACTIVE_PROMPT_ID = "extractive:1"


class ExtractiveDocumentProcessor:
    """The offline processor: the same surface as the LLM processor, so it runs through the same
    coordinator (selection, leases, batched writes, failure journal, run report)."""

    model = EXTRACTIVE_MODEL
    prompt_id = EXTRACTIVE_PROMPT_ID

    def process(self, message: Any, stop: Any = None) -> ProcessedDocument:
        """The document of one message, validated (the coordinator writes `process_row`'s row instead)."""
        return ProcessedDocument.model_validate(self.process_row(message).row)

    def process_row(self, message: Any) -> DocumentRow:
        """`process` as the row it stores (ProcessingStore.document_row's shape), without the model:
        what the coordinator calls. Every field comes from the extractors, so there is nothing for the
        model to check; building it and dumping it again would cost more than the extractors."""
        result = extract(message.get("text") or "")
        if not result.text_clean:
            raise EmptyMessage(message["source_ref"])
        ref = message["source_ref"]
        row = {
            "source_ref": ref,
            "id": doc_id(ref),
            "channel_id": message["channel_id"],
            "message_date": message["date"],
            "processed_at": utcnow(),
            "text_clean": result.text_clean,
            "summary": result.summary or None,
            "topics": result.topics,
            "entities": result.entities,
            "language": result.language,
            "model": EXTRACTIVE_MODEL,
            "prompt_id": EXTRACTIVE_PROMPT_ID,
            "pipeline_version": EXTRACTIVE_PROCESSOR_VERSION,
            "input_tokens": 0,
            "output_tokens": 0,
            "metadata": {"message_type": message.get("message_type")},
        }
        return DocumentRow(ref, row)

    def estimate_input_tokens(self, message: Any) -> int:
        return 0
