"""Typed LLM errors: what went wrong with one request, whether to retry it, whether to stop the run.

Each class has a short, stable `error_class` that the failure journal and the run report use. Three
behaviours matter to the coordinator:

- `transient` (rate limit, 5xx, timeout, connection): retried with backoff; after the last retry the
  message is journaled as *not* permanent, so the next run tries it again.
- `retry_output` (invalid JSON, schema violation, unreadable reply): the model produced something
  unusable; retried, then journaled as permanent (``--retry-failed`` tries again).
- `fatal` (bad API key, unknown model or endpoint, a refused TLS certificate, a long rate-limit pause):
  every request would fail the same way, so the run stops; the message is journaled as not permanent.

Everything else (400 bad request, refusal, length cut-off, content filter) is permanent at once.
"""

from __future__ import annotations

from tg_parser.errors import EXIT_CONFIG, EXIT_RATE_LIMITED, ItemFailure


class LlmError(ItemFailure):
    """A request to the LLM failed (see `ItemFailure` for how the journal treats each class)."""

    error_class = "llm_error"


# --- transient: retried with backoff, journaled as not permanent -------------------------------------


class LlmRateLimited(LlmError):
    error_class = "rate_limited"
    transient = True


class LlmServerError(LlmError):
    error_class = "server_error"
    transient = True


class LlmTimeout(LlmError):
    error_class = "timeout"
    transient = True


class LlmConnectionError(LlmError):
    error_class = "connection_error"
    transient = True


# --- the model's output is unusable: retried, then permanent ----------------------------------------


class LlmInvalidJson(LlmError):
    error_class = "invalid_json"
    retry_output = True


class LlmSchemaViolation(LlmError):
    error_class = "schema_invalid"
    retry_output = True


class LlmBadReply(LlmError):
    """The HTTP reply itself is unreadable (not JSON, or not shaped like the API's reply)."""

    error_class = "bad_reply"
    retry_output = True


# --- permanent at once --------------------------------------------------------------------------------


class LlmBadRequest(LlmError):
    error_class = "bad_request"


class LlmUnexpectedEncoding(LlmError):
    """The reply's body is in a content coding the client did not ask for and cannot decode (a gateway
    that compresses with brotli whatever it is told): a fault of the endpoint, not of the model's
    output, so not retried."""

    error_class = "bad_reply"


class LlmRefusal(LlmError):
    error_class = "refusal"


class LlmLengthCutoff(LlmError):
    error_class = "length"


class LlmContentFiltered(LlmError):
    error_class = "content_filter"


# --- fatal: stop the run ---------------------------------------------------------------------------------


class LlmAuthError(LlmError):
    error_class = "auth"
    fatal = True
    exit_code = EXIT_CONFIG


class LlmNotFound(LlmError):
    error_class = "not_found"
    fatal = True
    exit_code = EXIT_CONFIG


class LlmCertificateRefused(LlmError):
    """The endpoint's TLS certificate failed verification (not trusted, or not for that host): every
    connection would fail the same way until the trusted CAs or the base URL change, so no retries."""

    error_class = "tls_certificate"
    fatal = True
    exit_code = EXIT_CONFIG


class LlmRateLimitPause(LlmError):
    """The provider asked for a pause longer than a run should sleep (a quota, not a burst)."""

    error_class = "rate_limited"
    fatal = True
    exit_code = EXIT_RATE_LIMITED


class LlmRejectedEverything(LlmError):
    """The first requests of a run were all rejected: the settings, not the messages, are wrong."""

    error_class = "bad_request"
    fatal = True
    exit_code = EXIT_CONFIG


class LlmCancelled(LlmError):
    """The run was stopped (Ctrl-C) while this request waited to be retried."""

    error_class = "cancelled"
    transient = True
