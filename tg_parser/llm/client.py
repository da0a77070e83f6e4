"""The LLM client: structured outputs over the `openai` SDK, on the Responses or Chat Completions API.

- API choice (`LLM_API`): `responses` on OpenAI's own endpoint, `chat` on any other base URL (Ollama,
  vLLM, LiteLLM and other gateways mostly speak Chat Completions only); `auto` picks by the base URL.
- Model families: GPT-5-family models get `reasoning.effort` + `text.verbosity` (Chat: `reasoning_effort`
  + `verbosity`) and no temperature, o-series reasoning models get the effort only, every other model
  gets `temperature: 0` and no effort. Each family's accepted efforts are known (`model_traits`): an
  effort the model rejects is a ConfigError when the config is built, before any request. Output is capped by `max_output_tokens` (Responses), `max_completion_tokens`
  (Chat, reasoning models) or `max_tokens` (Chat, others: what local servers understand).
- Structured output with a strict JSON schema (Responses `text.format`, Chat `response_format`), and
  the reply validated with pydantic regardless.
- Errors become the typed errors of `tg_parser.llm.errors`. An answer that is not JSON or breaks the
  schema is retried at most `LLM_BAD_OUTPUT_RETRIES` times (default 1: each retry costs full tokens and a
  model that cannot answer a message rarely can on the third try). Retries are ours, not the SDK's
  (`max_retries=0` on the SDK client): a 429 pauses *every* worker of this client until Retry-After has
  passed (a shared gate), not only the thread that received it, and waits can be cut short by Ctrl-C.
  With LLM_SHARED_PAUSE (default on) the `process` coordinator shares that gate through the database
  with every process using the same endpoint and key (see `RateGate`).
- The body is encoded once (orjson) and posted with the SDK client's `post()` (its auth, headers,
  timeouts and typed errors), and the reply's JSON is read directly: `responses.create` walks the
  parameters against the API's typed schema on every call and the typed response objects cost about
  1 ms of CPU each, which matters at 30+ calls in flight in one process. Each sending thread has an SDK
  client (one connection) of its own: see `LlmClient`.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import math
import re
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx2
import openai
import orjson
from pydantic import BaseModel, ValidationError

from tg_parser.backoff import Backoff
from tg_parser.config import Settings
from tg_parser.errors import ConfigError
from tg_parser.llm.errors import (
    LlmAuthError,
    LlmBadReply,
    LlmBadRequest,
    LlmCancelled,
    LlmCertificateRefused,
    LlmConnectionError,
    LlmContentFiltered,
    LlmError,
    LlmInvalidJson,
    LlmLengthCutoff,
    LlmNotFound,
    LlmRateLimited,
    LlmRateLimitPause,
    LlmRefusal,
    LlmSchemaViolation,
    LlmServerError,
    LlmTimeout,
    LlmUnexpectedEncoding,
)
from tg_parser.llm.structured import StructuredFormat
from tg_parser.llm.transport import LeanTransport, lean_transport_applies

OPENAI_BASE_URL = "https://api.openai.com/v1"
# A Retry-After longer than this is a quota, not a burst: the run stops instead of sleeping.
MAX_RETRY_AFTER = 300.0
# The content codings asked for (Accept-Encoding), which httpx decodes with the standard library's zlib.
# Named rather than left to httpx, which would also ask for br and zstd whenever their optional packages
# happen to be installed; a reply in any other coding is refused (`_check_content_encoding`).
ACCEPTED_ENCODINGS = ("gzip", "deflate")
MAX_BACKOFF = 30.0

Api = Literal["responses", "chat"]


# --- configuration --------------------------------------------------------------------------------


# Reasoning efforts per model family, as OpenAI documents them: the o-series knows low|medium|high, the
# first GPT-5 models add `minimal`, GPT-5.1 replaces it with `none`, GPT-5.2 and later add `xhigh`.
O_SERIES_EFFORTS = ("low", "medium", "high")
GPT5_EFFORTS = ("minimal", "low", "medium", "high")
GPT51_EFFORTS = ("none", "low", "medium", "high")
GPT52_EFFORTS = ("none", "low", "medium", "high", "xhigh")
# LLM_REASONING_EFFORT values that are not an effort: `auto` sends the cheapest effort the model accepts,
# `omit` sends none (the model's own default applies).
AUTO_EFFORT = "auto"
OMIT_EFFORT = "omit"


@dataclass(frozen=True)
class ModelTraits:
    reasoning: bool  # accepts a reasoning effort, rejects temperature
    verbosity: bool  # accepts a verbosity (GPT-5 family)
    efforts: tuple[str, ...] = ()  # the reasoning efforts it accepts, cheapest first
    family: str = "other"

    def effort_for(self, model: str, configured: str | None) -> str | None:
        """The effort to send for `configured` (None: send none); ConfigError if the model rejects it."""
        if not self.reasoning or configured in (None, OMIT_EFFORT):
            return None  # non-reasoning models get no effort at all (see docs/PROCESSING.md)
        if configured == AUTO_EFFORT:
            return self.efforts[0]
        if configured not in self.efforts:
            accepted = ", ".join(self.efforts)
            raise ConfigError(
                f"LLM_REASONING_EFFORT={configured} is not accepted by {model} "
                f"({self.family} models accept {accepted})",
                f"set LLM_REASONING_EFFORT to one of {accepted}, or to auto (the cheapest the model "
                "accepts) or omit (the model's own default)",
            )
        return configured


def model_traits(model: str) -> ModelTraits:
    """What a model accepts, from its name (gateway prefixes such as `openai/` are ignored)."""
    name = model.lower().rsplit("/", 1)[-1]
    if name.startswith("gpt-5") and "-chat" not in name:
        minor = re.match(r"^gpt-5\.(\d+)", name)
        if minor is None:
            return ModelTraits(reasoning=True, verbosity=True, efforts=GPT5_EFFORTS, family="GPT-5")
        if int(minor.group(1)) == 1:
            return ModelTraits(reasoning=True, verbosity=True, efforts=GPT51_EFFORTS, family="GPT-5.1")
        return ModelTraits(reasoning=True, verbosity=True, efforts=GPT52_EFFORTS, family="GPT-5.2+")
    if re.match(r"^o\d", name):
        return ModelTraits(reasoning=True, verbosity=False, efforts=O_SERIES_EFFORTS, family="o-series")
    return ModelTraits(reasoning=False, verbosity=False)


def is_openai_endpoint(base_url: str | None) -> bool:
    return base_url is None or (urlsplit(base_url).hostname or "").lower() == "api.openai.com"


def resolve_api(setting: str, base_url: str | None) -> Api:
    if setting in ("responses", "chat"):
        return setting  # type: ignore[return-value]
    return "responses" if is_openai_endpoint(base_url) else "chat"


@dataclass(frozen=True)
class LlmConfig:
    model: str
    api: Api
    base_url: str
    api_key: str = field(repr=False)
    reasoning_effort: str | None  # what is sent: already checked against the model (from_settings)
    verbosity: str | None
    max_output_tokens: int
    timeout: float
    max_retries: int
    # Retries of an answer that is not JSON or breaks the schema (a full-price request each): usually the
    # model cannot answer that message, so one retry, not max_retries.
    bad_output_retries: int = 1

    @classmethod
    def from_settings(cls, settings: Settings) -> LlmConfig:
        base_url = settings.openai_base_url or None
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
        if not key:
            if is_openai_endpoint(base_url):
                raise ConfigError(
                    "OPENAI_API_KEY is not set",
                    "set it in the environment or .env, or point OPENAI_BASE_URL at another "
                    "OpenAI-compatible server (Ollama, vLLM, ...)",
                )
            key = "not-needed"  # local servers ignore it, the SDK insists on one
        return cls(
            model=settings.llm_model,
            api=resolve_api(settings.llm_api, base_url),
            base_url=base_url or OPENAI_BASE_URL,
            api_key=key,
            reasoning_effort=model_traits(settings.llm_model).effort_for(
                settings.llm_model, settings.llm_reasoning_effort
            ),
            verbosity=settings.llm_verbosity,
            max_output_tokens=settings.llm_max_output_tokens,
            timeout=settings.llm_timeout,
            max_retries=settings.llm_max_retries,
            bad_output_retries=settings.llm_bad_output_retries,
        )

    @property
    def traits(self) -> ModelTraits:
        return model_traits(self.model)

    def describe(self) -> str:
        host = urlsplit(self.base_url).netloc
        return f"{self.model} via {self.api} API at {host}"


# --- request bodies -------------------------------------------------------------------------------


def responses_params(
    config: LlmConfig, fmt: StructuredFormat, instructions: str, user_input: str
) -> dict[str, Any]:
    """Keyword arguments for `client.responses.create`."""
    text: dict[str, Any] = {
        "format": {"type": "json_schema", "name": fmt.name, "schema": fmt.schema, "strict": True}
    }
    params: dict[str, Any] = {
        "model": config.model,
        "instructions": instructions,
        # A plain string is one user message; it also keeps the SDK from walking a list of input items.
        "input": user_input,
        "max_output_tokens": config.max_output_tokens,
        "store": False,  # nothing to keep server-side: each message is one independent request
        "text": text,
    }
    traits = config.traits
    if traits.reasoning:
        if config.reasoning_effort:
            params["reasoning"] = {"effort": config.reasoning_effort}
        if traits.verbosity and config.verbosity:
            text["verbosity"] = config.verbosity
    else:
        params["temperature"] = 0
    return params


def chat_params(
    config: LlmConfig, fmt: StructuredFormat, instructions: str, user_input: str
) -> dict[str, Any]:
    """Keyword arguments for `client.chat.completions.create`."""
    params: dict[str, Any] = {
        "model": config.model,
        "messages": [
            {"role": "system", "content": instructions},
            {"role": "user", "content": user_input},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": fmt.name, "schema": fmt.schema, "strict": True},
        },
    }
    traits = config.traits
    if traits.reasoning:
        params["max_completion_tokens"] = config.max_output_tokens
        if config.reasoning_effort:
            params["reasoning_effort"] = config.reasoning_effort
        if traits.verbosity and config.verbosity:
            params["verbosity"] = config.verbosity
    else:
        params["max_tokens"] = config.max_output_tokens
        params["temperature"] = 0
    return params


# --- replies --------------------------------------------------------------------------------------


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.reasoning_tokens += other.reasoning_tokens


@dataclass
class ReplyText:
    """The parts of one reply the client acts on, whichever API produced it."""

    text: str
    usage: Usage
    model: str | None = None
    refusal: str | None = None
    stop: str = "complete"  # complete | length | content_filter | failed
    detail: str = ""


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def read_responses_reply(data: Mapping[str, Any]) -> ReplyText:
    usage_data = data.get("usage") or {}
    usage = Usage(
        _int(usage_data.get("input_tokens")),
        _int(usage_data.get("output_tokens")),
        _int((usage_data.get("output_tokens_details") or {}).get("reasoning_tokens")),
    )
    texts: list[str] = []
    refusal: str | None = None
    for item in data.get("output") or []:
        if not isinstance(item, Mapping) or item.get("type") != "message":
            continue  # reasoning items and the like carry no answer
        for part in item.get("content") or []:
            if not isinstance(part, Mapping):
                continue
            if part.get("type") == "output_text":
                texts.append(str(part.get("text") or ""))
            elif part.get("type") == "refusal":
                refusal = str(part.get("refusal") or "refused")
    reply = ReplyText("".join(texts), usage, data.get("model"), refusal)
    status = data.get("status")
    if status == "incomplete":
        reason = str((data.get("incomplete_details") or {}).get("reason") or "")
        reply.stop = "content_filter" if reason == "content_filter" else "length"
        reply.detail = reason
    elif status == "failed":
        reply.stop = "failed"
        reply.detail = str((data.get("error") or {}).get("message") or "the response failed")
    elif "output" not in data:
        raise LlmBadReply("the reply has no 'output': not a Responses API reply")
    return reply


def read_chat_reply(data: Mapping[str, Any]) -> ReplyText:
    usage_data = data.get("usage") or {}
    usage = Usage(
        _int(usage_data.get("prompt_tokens")),
        _int(usage_data.get("completion_tokens")),
        _int((usage_data.get("completion_tokens_details") or {}).get("reasoning_tokens")),
    )
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise LlmBadReply("the reply has no choices: not a Chat Completions reply")
    choice = choices[0]
    message = choice.get("message") or {}
    reply = ReplyText(str(message.get("content") or ""), usage, data.get("model"), message.get("refusal"))
    finish = choice.get("finish_reason")
    if finish == "length":
        reply.stop = "length"
    elif finish == "content_filter":
        reply.stop = "content_filter"
    return reply


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def decode_output(reply: ReplyText, fmt: StructuredFormat, max_output_tokens: int) -> BaseModel:
    """The reply's structured output, or the typed error that says why there is none."""
    if reply.refusal:
        raise LlmRefusal(f"the model refused: {reply.refusal[:300]}")
    if reply.stop == "length":
        raise LlmLengthCutoff(
            f"the output was cut off at the token limit ({max_output_tokens})",
            "raise LLM_MAX_OUTPUT_TOKENS, or lower LLM_REASONING_EFFORT",
        )
    if reply.stop == "content_filter":
        raise LlmContentFiltered("the provider's content filter stopped the output")
    if reply.stop == "failed":
        raise LlmServerError(f"the provider reported a failed response: {reply.detail[:300]}")
    text = reply.text.strip()
    fenced = _FENCE.match(text)  # some local models wrap JSON in a Markdown fence despite the schema
    if fenced:
        text = fenced.group(1)
    try:
        data = json.loads(text)
    except ValueError:
        raise LlmInvalidJson(f"the output is not JSON: {text[:120]!r}") from None
    try:
        return fmt.model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise LlmSchemaViolation(f"the output does not match the {fmt.name} schema: {problems}") from None


# --- errors from the SDK ------------------------------------------------------------------------------


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date), if present and sane."""
    if not headers:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            parsed = email.utils.parsedate_tz(value) if divisor == 1.0 else None
            if parsed is None:
                continue
            seconds = email.utils.mktime_tz(parsed) - time.time()
        if math.isfinite(seconds):
            return max(0.0, seconds)
    return None


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and inner.get("message"):
            return str(inner["message"])[:300]
        if isinstance(inner, str):
            return inner[:300]
    return (exc.message or "")[:300]


def _certificate_refused(exc: BaseException) -> str | None:
    """Why the server's certificate was refused (not trusted, or not for that host), if that is why the
    connection failed: the reason names the certificate, never the request."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return str(seen.verify_message or seen.reason or "not verified")[:200]
        seen = seen.__cause__ or seen.__context__
    return None


def _check_content_encoding(response: httpx2.Response) -> None:
    """Refuse a successful reply whose body is in a coding we did not ask for (the HTTP client's response
    hook, before the body is decoded): httpx skips codings it does not know and hands the still-encoded
    bytes on, which would end as "not JSON" and be retried as if the model had said something wrong.
    Error replies are left alone: their status decides (a 429 must still pause and retry)."""
    if not response.is_success:
        return
    codings = [c.strip().lower() for c in response.headers.get_list("content-encoding", split_commas=True)]
    unexpected = [c for c in codings if c and c != "identity" and c not in ACCEPTED_ENCODINGS]
    if unexpected:
        raise LlmUnexpectedEncoding(
            f"the reply from {response.request.url.netloc.decode('ascii', 'replace')} is encoded as "
            f"{', '.join(unexpected)} (Content-Encoding), which was not asked for and cannot be decoded",
            f"the client asks for {', '.join(ACCEPTED_ENCODINGS)} or none (Accept-Encoding): make the "
            "endpoint, or a gateway or proxy in between, honour it",
            status=response.status_code,
        )


def translate_sdk_error(exc: openai.OpenAIError, config: LlmConfig) -> LlmError:
    """Map an SDK exception (by type, never by message text) to our typed error."""
    if isinstance(exc, openai.APITimeoutError):
        return LlmTimeout(f"no reply within {config.timeout:g} s", "raise LLM_TIMEOUT if the model is slow")
    if isinstance(exc, openai.APIConnectionError):
        if untrusted := _certificate_refused(exc):
            # A configuration problem, not a network one: retrying would be refused the same way.
            return LlmCertificateRefused(
                f"the TLS certificate of {urlsplit(config.base_url).netloc} was refused "
                f"(certificate verify failed: {untrusted})",
                "point SSL_CERT_FILE at the bundle of the CA that signed the endpoint's certificate (a gateway "
                "or inspecting proxy has its own), or use the host name it was issued for in OPENAI_BASE_URL",
            )
        return LlmConnectionError(
            f"cannot reach {urlsplit(config.base_url).netloc}: {type(exc.__cause__ or exc).__name__}",
            "check OPENAI_BASE_URL and that the server is running",
        )
    if not isinstance(exc, openai.APIStatusError):
        return LlmBadReply(f"unexpected reply: {type(exc).__name__}: {str(exc)[:200]}")
    status = exc.status_code
    said = _server_message(exc)
    retry_after = retry_after_seconds(exc.response.headers)
    if isinstance(exc, openai.RateLimitError):
        if retry_after is not None and retry_after > MAX_RETRY_AFTER:
            return LlmRateLimitPause(
                f"rate limited for {retry_after:.0f} s: {said}",
                "the provider's quota is used up; run again later",
                status=status,
                retry_after=retry_after,
            )
        return LlmRateLimited(f"rate limited (429): {said}", status=status, retry_after=retry_after)
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return LlmAuthError(
            f"the LLM endpoint refused the credentials ({status}): {said}",
            "check OPENAI_API_KEY (and its project's access to LLM_MODEL)",
            status=status,
        )
    if isinstance(exc, openai.NotFoundError):
        return LlmNotFound(
            f"not found ({status}) at {urlsplit(config.base_url).netloc}: {said}",
            f"check LLM_MODEL and OPENAI_BASE_URL; a server without the {config.api} API needs "
            f"LLM_API={'chat' if config.api == 'responses' else 'responses'}",
            status=status,
        )
    if status >= 500 or status in (408, 409):
        return LlmServerError(f"server error ({status}): {said}", status=status, retry_after=retry_after)
    return LlmBadRequest(f"request rejected ({status}): {said}", status=status)


# --- the client -----------------------------------------------------------------------------------


@dataclass
class LlmResult:
    output: Any  # an instance of the format's pydantic model
    usage: Usage
    attempts: int
    model: str
    api: Api


class RateGate:
    """A pause shared by every thread using one client: after a 429, nobody sends until it has passed.

    With LLM_SHARED_PAUSE the process coordinator also shares it with the other processes using the same
    endpoint and key, through the database: it publishes this gate's new deadlines (`take_unpublished`)
    and holds the gate until a deadline another process published (`hold_until`)."""

    def __init__(self) -> None:
        self._until = 0.0
        self._unpublished: float | None = None  # wall-clock deadline (time.time()) not shared yet
        self._lock = threading.Lock()

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._until = max(self._until, time.monotonic() + seconds)
            deadline = time.time() + seconds
            self._unpublished = max(self._unpublished or 0.0, deadline)

    def hold_until(self, deadline: float) -> None:
        """Pause until the wall-clock time `deadline` (a Retry-After another process received)."""
        with self._lock:
            self._until = max(self._until, time.monotonic() + (deadline - time.time()))

    def take_unpublished(self) -> float | None:
        """The latest deadline this process set since the last call (wall clock), or None."""
        with self._lock:
            deadline, self._unpublished = self._unpublished, None
        return deadline

    def wait(self, stop: threading.Event | None) -> None:
        while True:
            with self._lock:
                remaining = self._until - time.monotonic()
            if remaining <= 0:
                return
            _sleep(remaining, stop)


def _sleep(seconds: float, stop: threading.Event | None) -> None:
    if stop is None:
        time.sleep(seconds)
    elif stop.wait(seconds):
        raise LlmCancelled("stopped while waiting to retry")


class LlmClient:
    """Thread-safe: one client serves every worker thread of a run (one rate gate; a connection each).

    Each thread that sends gets its own SDK client over its own HTTP connection pool, all sharing one TLS
    context: a pool shared by N threads is searched and locked on every request and every reply, which
    costs CPU in proportion to N (about a tenth of our per-request CPU at 32 in flight), and one connection
    per in-flight request is what a shared pool ends up holding anyway.
    """

    def __init__(self, config: LlmConfig, *, backoff_base: float = 0.5) -> None:
        self.config = config
        self.backoff = Backoff(
            base=backoff_base, cap=MAX_BACKOFF, max_attempts=config.max_retries + 1, jitter=0.25
        )
        self.gate = RateGate()
        # httpx2 logs every request at INFO; keep the run's log about the run.
        logging.getLogger("httpx2").setLevel(logging.WARNING)
        # Built once (about 45 ms of CPU each): the context the SDK's HTTP client would build by default.
        self._tls = httpx2.create_ssl_context()
        self._lean = lean_transport_applies()
        self._sdk = self._new_sdk()
        self._local = threading.local()
        self._local.sdk = self._sdk  # the constructing thread uses the first one
        self._clients = [self._sdk]
        self._clients_lock = threading.Lock()
        self._closed = False  # set by close(): requests still in flight in other threads end as cancelled
        # The endpoint's path under the base URL: the body is posted there through the SDK client's own
        # request machinery (auth, headers, timeouts, typed errors) with `client.post`, as the SDK documents
        # for raw requests, rather than through `responses.create` / `chat.completions.create`: those walk
        # every request's parameters against the API's typed schema (`maybe_transform`, about 1 ms of CPU
        # for our body, schema included) only to hand back the same dict, which the SDK then encodes again.
        # The body is encoded once here, with orjson, and sent as is.
        self._path = "/responses" if config.api == "responses" else "/chat/completions"

    def _new_sdk(self) -> openai.OpenAI:
        # One connection per thread: the lean transport does what httpx's pool of one would, for about a
        # third of the CPU (see tg_parser.llm.transport); a proxy in the environment keeps httpx's own.
        transport = LeanTransport(self._tls) if self._lean else None
        return openai.OpenAI(
            api_key=self.config.api_key,
            base_url=self.config.base_url,
            timeout=self.config.timeout,
            max_retries=0,  # retries are ours: see the module docstring
            http_client=openai.DefaultHttpxClient(
                verify=self._tls,
                transport=transport,
                headers={"Accept-Encoding": ", ".join(ACCEPTED_ENCODINGS)},
                event_hooks={"response": [_check_content_encoding]},
            ),
        )

    def _thread_sdk(self) -> openai.OpenAI:
        """This thread's SDK client (made on its first request)."""
        sdk: openai.OpenAI | None = getattr(self._local, "sdk", None)
        if sdk is None:
            sdk = self._new_sdk()
            with self._clients_lock:
                if self._closed:
                    sdk.close()
                    raise LlmCancelled("the run stopped: its LLM client is closed")
                self._clients.append(sdk)
            self._local.sdk = sdk
        return sdk

    @classmethod
    def from_settings(cls, settings: Settings) -> LlmClient:
        return cls(LlmConfig.from_settings(settings))

    @property
    def pause_key(self) -> str:
        """What identifies this client's quota across processes: sha256 of the endpoint and the API key
        (stored in place of the key, which never leaves the process)."""
        digest = hashlib.sha256(f"{self.config.base_url}\n{self.config.api_key}".encode())
        return digest.hexdigest()

    def close(self) -> None:
        """Close every thread's connection. A run closes its client while requests it abandoned may still
        be in flight in worker threads: those end as cancelled (LlmCancelled), not as errors."""
        with self._clients_lock:
            self._closed = True
            clients, self._clients = self._clients, []
        for sdk in clients:
            sdk.close()

    def request_params(self, fmt: StructuredFormat, instructions: str, user_input: str) -> dict[str, Any]:
        build = responses_params if self.config.api == "responses" else chat_params
        return build(self.config, fmt, instructions, user_input)

    def complete(
        self,
        fmt: StructuredFormat,
        instructions: str,
        user_input: str,
        *,
        stop: threading.Event | None = None,
    ) -> LlmResult:
        """One structured completion, retried as the error's class says; raises an LlmError when it gives up.

        Tokens spent on failed attempts are counted too (on the result, or on the raised error).
        """
        body = orjson.dumps(self.request_params(fmt, instructions, user_input))  # once, for every attempt
        usage = Usage()
        attempt = 0
        bad_outputs = 0  # answers that were not JSON or broke the schema
        while True:
            self.gate.wait(stop)
            try:
                reply = self._send(body)
                usage.add(reply.usage)
                output = decode_output(reply, fmt, self.config.max_output_tokens)
                return LlmResult(
                    output, usage, attempt + 1, reply.model or self.config.model, self.config.api
                )
            except LlmError as exc:
                exc.attempts = attempt + 1
                exc.input_tokens, exc.output_tokens = usage.input_tokens, usage.output_tokens
                if not exc.retryable or attempt >= self.config.max_retries or isinstance(exc, LlmCancelled):
                    raise
                if isinstance(exc, LlmInvalidJson | LlmSchemaViolation):
                    bad_outputs += 1
                    if bad_outputs > self.config.bad_output_retries:
                        raise
                delay = exc.retry_after if exc.retry_after is not None else self._backoff(attempt)
                if isinstance(exc, LlmRateLimited):
                    self.gate.pause(delay)
                else:
                    _sleep(delay, stop)
                attempt += 1

    def _backoff(self, attempt: int) -> float:
        return self.backoff.delay(attempt)

    def _send(self, body: bytes) -> ReplyText:
        sdk = self._thread_sdk()
        try:
            content = sdk.post(self._path, cast_to=bytes, content=body)
        except openai.OpenAIError as exc:
            if self._closed:
                raise LlmCancelled("the run stopped: its LLM client was closed mid-request") from None
            raise translate_sdk_error(exc, self.config) from None
        except RuntimeError:
            # httpx refuses to send through a closed client ("the client has been closed")
            if self._closed:
                raise LlmCancelled("the run stopped: its LLM client is closed") from None
            raise
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise LlmBadReply(
                f"the server's reply is not JSON: {content[:80]!r}",
                "check that OPENAI_BASE_URL points at an OpenAI-compatible API",
            ) from None
        if not isinstance(data, Mapping):
            raise LlmBadReply("the server's reply is not a JSON object")
        if self.config.api == "responses":
            return read_responses_reply(data)
        return read_chat_reply(data)
