"""Builders shared by the processing tests: raw messages to process, settings and CLI environments."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from tg_parser.config import Settings
from tg_parser.db.base import Database
from tg_parser.domain.models import ProcessedDocument, RawMessage
from tg_parser.stores import ProcessingStore, RawStore

START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def message_text(i: int) -> str:
    return f"Message number {i}: release notes for version {i}.0 #python #release"


def seed_messages(
    db: Database,
    count: int,
    *,
    channel_id: int = 100,
    first_id: int = 1,
    source_id: str | None = None,
    text: Callable[[int], str] = message_text,
    message_type: str = "post",
) -> list[str]:
    """Store `count` raw messages (ids first_id..) and return their source_refs in selection order."""
    messages = [
        RawMessage.build(
            channel_id=channel_id,
            message_type=message_type,  # type: ignore[arg-type]
            message_id=i,
            source_id=source_id,
            date=START + timedelta(minutes=i),
            text=text(i),
        )
        for i in range(first_id, first_id + count)
    ]
    store = RawStore(db)
    for start in range(0, len(messages), 500):
        store.store_batch(messages[start : start + 500])
    return [m.source_ref for m in messages]


def seed_documents(db: Database, count: int, *, words: int = 200, channel_id: int = 100) -> None:
    """Store `count` raw messages and a processed document for each, `words` words of text apiece (what
    an export streams: the export tests size their output with it)."""
    refs = seed_messages(db, count, channel_id=channel_id, text=lambda i: "x")
    ProcessingStore(db).upsert_documents(
        [
            ProcessedDocument(
                source_ref=ref,
                channel_id=channel_id,
                message_date=START + timedelta(minutes=i),
                text_clean=f"message {i} " + "word " * words,
                model="m",
                prompt_id="p",
                pipeline_version="1",
            )
            for i, ref in enumerate(refs, start=1)
        ]
    )


def llm_settings(settings: Settings, base_url: str, **overrides: object) -> Settings:
    """The test install's settings pointed at the local LLM server."""
    values: dict[str, object] = {
        "openai_base_url": base_url,
        "openai_api_key": None,
        "llm_api": "responses",
        "llm_model": "gpt-5-mini",
        "llm_max_retries": 2,
        "llm_timeout": 10.0,
    }
    values.update(overrides)
    return settings.model_copy(update=values)


def cli_env(settings: Settings, base_url: str | None = None, **extra: str) -> dict[str, str]:
    """Environment that makes `tg-parser` use this install (and the local LLM server)."""
    if settings.db_type == "sqlite":
        env = {"DB_TYPE": "sqlite", "DB_SQLITE_DIR": str(settings.db_sqlite_dir)}
    else:
        env = {
            "DB_TYPE": "postgres",
            "DB_HOST": settings.db_host,
            "DB_PORT": str(settings.db_port),
            "DB_USER": settings.db_user,
            "DB_NAME": settings.db_name,
        }
    if base_url is not None:
        env.update({"OPENAI_BASE_URL": base_url, "LLM_API": "responses", "LLM_MODEL": "gpt-5-mini"})
    env.update({"LLM_MAX_RETRIES": "2", "LOG_LEVEL": "WARNING"})
    env.update(extra)
    return env


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)
