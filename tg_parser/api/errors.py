"""Answers for what went wrong: one JSON shape, `{"error": {"code", "message"}, "request_id"}`."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.responses import Response


class ApiError(Exception):
    """An answer other than success, raised anywhere in a request and rendered by the app."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def unauthorized() -> ApiError:
    # Deliberately the same answer for a missing, malformed, unknown or revoked key, or a wrong secret.
    return ApiError(401, "unauthorized", "a valid API key is required", {"WWW-Authenticate": "Bearer"})


def forbidden() -> ApiError:
    return ApiError(403, "forbidden", "this API key's scope does not allow this request")


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def bad_request(message: str, field: str | None = None) -> ApiError:
    """422: a value the request carried is not acceptable (`field` names it)."""
    return ApiError(422, "invalid", f"{field}: {message}" if field else message)


def error_response(
    status: int, code: str, message: str, request_id: str | None, headers: Mapping[str, str] | None = None
) -> Response:
    body = orjson.dumps({"error": {"code": code, "message": message}, "request_id": request_id})
    response = Response(body, status_code=status, media_type="application/json", headers=dict(headers or {}))
    if request_id:
        response.headers["X-Request-ID"] = request_id
    return response
