"""All settings, read from the environment and `.env` (pydantic-settings).

Every field maps to an upper-case environment variable of the same name (``db_port`` ← ``DB_PORT``).
`.env.example` and docs/CONFIGURATION.md list them all; a test keeps the three in step.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tg_parser.errors import ConfigError

# Upper bounds of counts, ages and durations an operator gives (settings and command options alike): far
# above any real use, and low enough that date arithmetic and 64-bit SQL integers never overflow.
MAX_COUNT = 1_000_000_000
MAX_DAYS = 100_000  # about 270 years
MAX_LEASE_SECONDS = 86_400.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
        # `TELEGRAM_API_ID=` (as compose files and copied templates produce) means "not set", not "".
        env_ignore_empty=True,
    )

    # --- database -------------------------------------------------------------------------------
    db_type: Literal["sqlite", "postgres"] = "sqlite"
    db_sqlite_dir: Path = Path("./data")
    db_sqlite_busy_timeout: int = Field(30_000, ge=0, description="ms SQLite waits for a lock")
    database_url: SecretStr | None = None
    # Migrations (db upgrade/rollback/unlock/status, init) connect with this URL when set: an owner role
    # that may run DDL, while DATABASE_URL names a DML-only application role. See docs/SQL.md (roles).
    database_migration_url: SecretStr | None = None
    db_migration_lock_stale_after: int = Field(
        21_600,
        ge=60,
        description="seconds after which a PostgreSQL migration lock without a session is stale",
    )
    db_host: str = "localhost"
    db_port: int = Field(5432, ge=1, le=65535)
    db_name: str = "tg_parser"
    db_user: str = "tg_parser"
    db_password: SecretStr | None = None
    db_sslmode: str | None = None
    db_connect_timeout: int = Field(10, ge=1, description="seconds")
    db_pool_min_size: int = Field(1, ge=0)
    db_pool_max_size: int = Field(10, ge=1)
    db_pool_timeout: float = Field(30.0, gt=0, description="seconds to wait for a pooled connection")
    db_pool_max_idle: float = Field(600.0, gt=0, description="seconds an idle connection is kept")
    db_pool_max_lifetime: float = Field(3600.0, gt=0, description="seconds before a connection is recycled")
    # PostgreSQL session timeouts (ms; 0 disables one). Long operations (bulk transfer COPY, migrations)
    # lift the statement timeout for their own session; see docs/CONFIGURATION.md.
    db_statement_timeout: int = Field(300_000, ge=0, description="ms; 0 disables the limit")
    db_lock_timeout: int = Field(10_000, ge=0, description="ms a statement waits for a lock; 0 waits forever")
    db_idle_in_transaction_timeout: int = Field(
        60_000,
        ge=0,
        description="ms a transaction may sit idle before the server ends the session; 0 disables",
    )
    db_application_name: str = "tg-parser"
    db_disable_prepared_statements: bool = False  # set when connecting through PgBouncer (transaction mode)
    # "transaction": connections go through a transaction-pooling PgBouncer, so the tool keeps no session
    # state (no startup options, no session advisory locks, no prepared statements).
    db_pool_mode: Literal["session", "transaction"] = "session"

    # --- SQL overrides --------------------------------------------------------------------------
    tg_parser_sql_dir: Path | None = None

    # --- logging --------------------------------------------------------------------------------
    log_level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    # --- Telegram -------------------------------------------------------------------------------
    telegram_api_id: int | None = None
    telegram_api_hash: SecretStr | None = None
    telegram_session: SecretStr | None = None
    telegram_session_file: Path | None = None
    telegram_flood_sleep_threshold: int = Field(60, ge=0, description="seconds of FloodWait slept inline")
    ingest_batch_size: int = Field(500, ge=1, le=500)

    # --- LLM processing -------------------------------------------------------------------------
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    llm_model: str = "gpt-5-mini"
    llm_api: Literal["auto", "responses", "chat"] = "auto"
    # "auto": the cheapest effort the model accepts (o-series low, GPT-5 minimal, GPT-5.1+ none); "omit":
    # send none. Which efforts a model accepts: tg_parser.llm.client.model_traits (checked before requests).
    llm_reasoning_effort: (
        Literal["auto", "omit", "none", "minimal", "low", "medium", "high", "xhigh"] | None
    ) = "auto"
    llm_verbosity: Literal["low", "medium", "high"] | None = "low"
    llm_max_output_tokens: int = Field(2000, ge=16)
    llm_timeout: float = Field(60.0, gt=0, description="seconds per LLM request")
    llm_max_retries: int = Field(3, ge=0)
    llm_bad_output_retries: int = Field(
        1,
        ge=0,
        description="retries of an answer that is not JSON or breaks the schema (within LLM_MAX_RETRIES)",
    )
    llm_shared_pause: bool = Field(
        True,
        description="a 429's Retry-After pauses every process using the same endpoint and key (via the database)",
    )
    # USD per million tokens by model, laid over tg_parser.prices.DEFAULT_PRICES (JSON in the environment).
    llm_prices: Annotated[dict[str, dict[str, float]], NoDecode] = Field(default_factory=dict)
    llm_estimated_output_tokens: int = Field(
        400, ge=0, description="output tokens per message assumed by `process --dry-run`'s cost estimate"
    )
    prompts_dir: Path | None = None
    processor: Literal["auto", "llm", "extractive"] = "auto"
    process_lease_seconds: float = Field(
        60.0,
        ge=1,
        le=MAX_LEASE_SECONDS,
        description="how long a claimed message (and a process run) stays reserved; renewed every quarter of it",
    )

    process_read_ahead: int = Field(
        8,
        ge=0,
        le=64,
        description=(
            "PostgreSQL sessions a process run uses to read the next claims' pages ahead (0: off); "
            "at most DB_POOL_MAX_SIZE - 1, and it stops by itself when the pages are cached"
        ),
    )

    # --- topics ---------------------------------------------------------------------------------
    topic_batch_tokens: int = Field(6000, ge=500, description="estimated tokens of documents per LLM prompt")
    topic_singleton_min_score: float = Field(0.75, ge=0, le=1)
    topic_singleton_min_chars: int = Field(300, ge=0)
    topic_cluster_min_score: float = Field(0.6, ge=0, le=1)
    topic_cluster_min_anchors: int = Field(2, ge=2)
    topic_cluster_max_anchors: int = Field(3, ge=2)
    topic_supporting_min_score: float = Field(0.5, ge=0, le=1)
    topic_supporting_max_items: int = Field(50, ge=0)
    topic_min_hashtag_documents: int = Field(3, ge=2, description="extractive: documents sharing a hashtag")

    # --- HTTP API and run queue -----------------------------------------------------------------
    api_require_keys: bool = True  # false serves without keys, and then only on a loopback address
    api_probes_open: Literal["loopback", "all", "keys"] = "loopback"  # who may call /health /ready /metrics
    api_rate_limit_read: int = Field(600, ge=1, description="requests per window per key, read routes")
    api_rate_limit_write: int = Field(60, ge=1, description="requests per window per key, write routes")
    api_rate_window: int = Field(60, ge=1, le=3600, description="seconds")
    api_max_body_bytes: int = Field(65_536, ge=1024)
    api_max_page_size: int = Field(500, ge=1, le=10_000)
    api_cors_origins: str | None = None  # comma-separated origins; unset: CORS off
    api_key_cache_seconds: float = Field(2.0, ge=0, description="how long a verified key is trusted")
    run_lease_seconds: float = Field(60.0, ge=2, description="a queued run's lease, renewed while it runs")
    worker_poll_seconds: float = Field(5.0, gt=0, description="how often an idle worker looks for runs")
    webhook_secret: SecretStr | None = None
    webhook_max_attempts: int = Field(5, ge=1, le=20)
    webhook_timeout: float = Field(10.0, gt=0, description="seconds per webhook delivery attempt")
    webhook_allow_private: bool = Field(
        False, description="let webhooks reach loopback, private and link-local addresses"
    )

    # --- retention (`tg-parser db prune` and the automatic prune of `run`/`worker`) ---------------
    prune_runs_days: int = Field(
        90, ge=0, le=MAX_DAYS, description="run reports older than this go; 0 keeps all"
    )
    prune_ingest_runs_days: int = Field(90, ge=0, le=MAX_DAYS, description="ingestion attempts; 0 keeps all")
    prune_run_requests_days: int = Field(
        30, ge=0, le=MAX_DAYS, description="finished queued runs; 0 keeps all"
    )
    prune_versions_days: int = Field(
        365, ge=0, le=MAX_DAYS, description="message versions older than this; 0 keeps all"
    )
    prune_versions_keep: int = Field(
        10, ge=1, le=MAX_COUNT, description="newest versions of each message always kept"
    )
    prune_batch_size: int = Field(1000, ge=1, le=100_000, description="rows deleted per transaction")
    prune_auto_hours: float = Field(24.0, ge=0, description="run/worker prune at most this often; 0: never")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("db_type", "log_format", "llm_api", "processor", mode="before")
    @classmethod
    def _lower_choice(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("llm_prices", mode="before")
    @classmethod
    def _parse_prices(cls, value: object) -> object:
        """LLM_PRICES='{"model": {"input": 0.25, "output": 2.0}}': USD per million tokens, both given."""
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except ValueError:
                raise ValueError(
                    'not JSON; write it like {"gpt-5-mini": {"input": 0.25, "output": 2.0}}'
                ) from None
        if not isinstance(value, dict):
            raise ValueError('must be a JSON object like {"gpt-5-mini": {"input": 0.25, "output": 2.0}}')
        for model, price in value.items():
            if (
                not isinstance(price, dict)
                or set(price) != {"input", "output"}
                or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in price.values()
                )
            ):
                raise ValueError(
                    f'the price of {model!r} must be {{"input": USD, "output": USD}} per million tokens, '
                    "both numbers >= 0"
                )
        return {str(model).lower(): price for model, price in value.items()}

    @model_validator(mode="after")
    def _pool_bounds(self) -> Settings:
        if self.db_pool_min_size > self.db_pool_max_size:
            raise ValueError(
                f"DB_POOL_MIN_SIZE ({self.db_pool_min_size}) is larger than DB_POOL_MAX_SIZE ({self.db_pool_max_size})"
            )
        return self

    @property
    def read_ahead_sessions(self) -> int:
        """PROCESS_READ_AHEAD within the pool: the coordinator keeps one connection for itself."""
        return max(0, min(self.process_read_ahead, self.db_pool_max_size - 1))

    def secrets(self) -> list[str]:
        """Every secret value currently set, so logging can redact them wherever they appear."""
        values: list[str] = []
        for field in (
            "database_url",
            "database_migration_url",
            "db_password",
            "telegram_api_hash",
            "telegram_session",
            "openai_api_key",
            "webhook_secret",
        ):
            secret = getattr(self, field)
            if secret is not None and secret.get_secret_value():
                values.append(secret.get_secret_value())
        for url in (self.database_url, self.database_migration_url):
            if url is None:
                continue
            # The password inside the URL, decoded as the driver sees it (and may quote it in an error).
            password = _url_password(url.get_secret_value())
            if password:
                values.extend([password, unquote(password)])
        return values


def _url_password(url: str) -> str | None:
    """The password of a URL; also of one urlsplit refuses (an unclosed IPv6 "["), which is reported later
    as an error that may quote it."""
    try:
        return urlsplit(url).password
    except ValueError:
        userinfo, at, _ = url.partition("://")[2].partition("/")[0].rpartition("@")
        return userinfo.partition(":")[2] or None if at else None


def load_settings(**overrides: object) -> Settings:
    """Read settings; an invalid value becomes one ConfigError line that names the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"]).upper()
            given = error.get("input")
            shown = "" if isinstance(given, dict) or given is None else f" (got {str(given)[:60]!r})"
            if any(
                word in name
                for word in ("PASSWORD", "KEY", "HASH", "SESSION", "DATABASE_URL", "MIGRATION_URL")
            ):
                shown = ""  # never echo a secret back
            message = error["msg"].removeprefix("Value error, ")
            # A check across fields (loc is empty) names its variables in its own message.
            problems.append(f"{name}: {message}{shown}" if name else message)
        raise ConfigError(
            "invalid setting " + "; ".join(problems),
            "fix it in the environment or in .env (see docs/CONFIGURATION.md)",
        ) from None


def requested_log_format() -> str:
    """LOG_FORMAT as the environment or .env gives it, read without validating anything else: how to
    format a line written before the settings are loaded (a usage error, or the error about an invalid
    setting itself). "json" or "text"."""
    import os

    values: dict[str, str | None] = dict(os.environ)
    if not any(name.upper() == "LOG_FORMAT" and (value or "").strip() for name, value in values.items()):
        try:
            from dotenv import dotenv_values

            values = dict(dotenv_values(".env"))
        except Exception:  # an unreadable .env: the settings will say so in text
            return "text"
    for name, value in values.items():
        if name.upper() == "LOG_FORMAT" and (value or "").strip():
            return "json" if (value or "").strip().lower() == "json" else "text"
    return "text"
