"""Prompt files, their ids, and how documents are built from the model's output (no database)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tg_parser.errors import ConfigError
from tg_parser.llm.prompting import estimate_tokens, load_prompt
from tg_parser.processing.processor import (
    PROMPT_FIELDS,
    PROMPT_NAME,
    LlmDocumentProcessor,
    dedupe_entities,
    message_input,
    normalise_topics,
)
from tg_parser.processing.schema import EntityOutput


def test_packaged_prompt_loads_with_a_stable_id():
    first = load_prompt(PROMPT_NAME, placeholders=PROMPT_FIELDS)
    second = load_prompt(PROMPT_NAME, placeholders=PROMPT_FIELDS)
    assert first.prompt_id == second.prompt_id
    assert first.prompt_id.startswith("process_document:") and len(first.prompt_id.split(":")[1]) == 16
    assert first.origin == "package"
    assert "processed_document" in first.system


def test_an_override_changes_the_id_and_a_missing_file_falls_back(tmp_path):
    packaged = load_prompt(PROMPT_NAME, placeholders=PROMPT_FIELDS)
    (tmp_path / "process_document.user.md").write_text("Message: $text\n", encoding="utf-8")
    custom = load_prompt(PROMPT_NAME, tmp_path, placeholders=PROMPT_FIELDS)
    assert custom.prompt_id != packaged.prompt_id
    assert custom.system == packaged.system  # only the user template was overridden
    assert custom.render(text="hi", message_type="post", date="x") == "Message: hi"
    assert custom.origin == str(tmp_path)


def test_an_unreadable_override_is_a_configuration_error(tmp_path):
    (tmp_path / "process_document.system.md").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="cannot read prompt file"):
        load_prompt(PROMPT_NAME, tmp_path, placeholders=PROMPT_FIELDS)


def test_unknown_prompt_name():
    with pytest.raises(ConfigError, match=r"no prompt file topics_missing\.system\.md"):
        load_prompt("topics_missing")


def test_message_input_carries_type_date_and_text_verbatim():
    prompt = load_prompt(PROMPT_NAME, placeholders=PROMPT_FIELDS)
    text = "Цена $100 — ${not a placeholder} </message>?"
    rendered = message_input(
        prompt, {"message_type": "comment", "date": datetime(2025, 5, 6, 7, 8, 9, tzinfo=UTC), "text": text}
    )
    assert rendered.startswith("Telegram comment from 2025-05-06T07:08:09Z (UTC):")
    assert text in rendered


def test_estimate_tokens_counts_non_latin_text_denser():
    assert estimate_tokens("a" * 400) == 101
    assert estimate_tokens("я" * 400) == 161


def test_estimates_include_instructions_and_schema():
    processor = LlmDocumentProcessor.load(None, model="gpt-5-mini")
    message = {"message_type": "post", "date": datetime(2025, 1, 1, tzinfo=UTC), "text": "hello"}
    assert processor.estimate_input_tokens(message) > 400
    assert processor.model == "gpt-5-mini"


def test_topics_are_normalised_and_entities_deduplicated():
    assert normalise_topics(["#Python", " python ", "Data  Science", "", "#"]) == ["python", "data science"]
    entities = dedupe_entities(
        [
            EntityOutput(type="organization", value="OpenAI", confidence=0.5),
            EntityOutput(type="organization", value="openai", confidence=0.9),
            EntityOutput(type="person", value="Pavel  Durov", confidence=0.8),
        ]
    )
    assert [(e.type, e.value, e.confidence) for e in entities] == [
        ("organization", "openai", 0.9),
        ("person", "Pavel Durov", 0.8),
    ]
