"""The LLM topic strategy: candidate topics per batch of documents, then supporting items per batch.

Batches are sized by an estimated-token budget, so a channel of any size is sent as many small prompts
(never one prompt with the whole channel). Two passes over the corpus, each streamed from the database:
1. `topics` schema: candidate topics with anchors, per batch; merged across batches afterwards;
2. `supporting_items` schema: for every batch, which documents support which of the gated topics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from pydantic import BaseModel, Field

from tg_parser.domain.models import Anchor, SupportingItem
from tg_parser.llm.client import LlmClient
from tg_parser.llm.prompting import Prompt, estimate_tokens, load_prompt
from tg_parser.llm.structured import structured_format
from tg_parser.stores.topics import CorpusDocument
from tg_parser.topics.model import Candidate, Topic

DOC_CHARS = 600  # of each document's text shown to the model


class AnchorOutput(BaseModel):
    source_ref: str = Field(description="A source_ref copied exactly from the batch.")
    score: float = Field(ge=0, le=1, description="How central the document is to the topic, 0..1.")


class TopicOutput(BaseModel):
    title: str = Field(description="A short, specific topic name.")
    summary: str = Field(description="One or two sentences on what the topic covers.")
    tags: list[str] = Field(description="Up to 5 short lowercase labels.")
    anchors: list[AnchorOutput] = Field(description="The documents that best represent the topic.")


class TopicsOutput(BaseModel):
    topics: list[TopicOutput]


class SupportOutput(BaseModel):
    topic: str = Field(description="The topic key, e.g. T1.")
    source_ref: str = Field(description="A source_ref copied exactly from the batch.")
    score: float = Field(ge=0, le=1, description="How strongly the document supports the topic, 0..1.")
    reason: str = Field(description="A few words on why.")


class SupportingItemsOutput(BaseModel):
    items: list[SupportOutput]


def document_line(doc: CorpusDocument) -> str:
    text = " ".join(doc.text_clean.split())[:DOC_CHARS]
    summary = " ".join((doc.summary or "").split())
    return f"[{doc.source_ref}] {summary} — {text}" if summary else f"[{doc.source_ref}] {text}"


def token_batches(docs: Iterable[CorpusDocument], budget: int) -> Iterator[list[CorpusDocument]]:
    """Consecutive documents whose rendered lines fit the token budget (at least one per batch)."""
    batch: list[CorpusDocument] = []
    used = 0
    for doc in docs:
        cost = estimate_tokens(document_line(doc)) + 2
        if batch and used + cost > budget:
            yield batch
            batch, used = [], 0
        batch.append(doc)
        used += cost
    if batch:
        yield batch


class LlmTopicStrategy:
    name = "llm"

    def __init__(self, client: LlmClient, *, batch_tokens: int, prompts_dir=None) -> None:
        self.client = client
        self.batch_tokens = batch_tokens
        self.topics_prompt: Prompt = load_prompt("topics", prompts_dir, placeholders=("batch", "documents"))
        self.support_prompt: Prompt = load_prompt(
            "supporting_items", prompts_dir, placeholders=("batch", "topics", "documents")
        )
        self.model: str | None = client.config.model
        self.prompt_id: str | None = f"{self.topics_prompt.prompt_id}+{self.support_prompt.prompt_id}"
        self.input_tokens = 0
        self.output_tokens = 0
        self.calls = 0

    def _call(self, name: str, model: type[BaseModel], prompt: Prompt, **values: object) -> BaseModel:
        result = self.client.complete(structured_format(name, model), prompt.system, prompt.render(**values))
        self.calls += 1
        self.input_tokens += result.usage.input_tokens
        self.output_tokens += result.usage.output_tokens
        return result.output

    def candidates(self, corpus: Callable[[], Iterable[CorpusDocument]]) -> list[Candidate]:
        found: list[Candidate] = []
        for number, batch in enumerate(token_batches(corpus(), self.batch_tokens), start=1):
            output = self._call(
                "topics",
                TopicsOutput,
                self.topics_prompt,
                batch=number,
                documents="\n".join(map(document_line, batch)),
            )
            assert isinstance(output, TopicsOutput)
            for topic in output.topics:
                found.append(
                    Candidate(
                        title=topic.title,
                        summary=topic.summary,
                        tags=list(topic.tags),
                        anchors=[Anchor(source_ref=a.source_ref, score=a.score) for a in topic.anchors],
                    )
                )
        return found

    def supporting(
        self, topics: list[Topic], corpus: Callable[[], Iterable[CorpusDocument]]
    ) -> dict[str, list[SupportingItem]]:
        if not topics:
            return {}
        keys = {f"T{i}": topic for i, topic in enumerate(topics, start=1)}
        listing = "\n".join(f"{key}: {t.title} — {' '.join(t.summary.split())}" for key, t in keys.items())
        scored: dict[str, list[SupportingItem]] = {}
        for number, batch in enumerate(token_batches(corpus(), self.batch_tokens), start=1):
            in_batch = {doc.source_ref for doc in batch}
            output = self._call(
                "supporting_items",
                SupportingItemsOutput,
                self.support_prompt,
                batch=number,
                topics=listing,
                documents="\n".join(map(document_line, batch)),
            )
            assert isinstance(output, SupportingItemsOutput)
            for item in output.items:
                topic = keys.get(item.topic.strip())
                if topic is None or item.source_ref not in in_batch:
                    continue  # an unknown key or a ref outside this batch is the model's invention
                scored.setdefault(topic.topic_id, []).append(
                    SupportingItem(source_ref=item.source_ref, score=item.score, reason=item.reason or None)
                )
        return scored
