"""Errors the proxy answers with, in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from llmstash.exceptions import APIError, ConfigurationError

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class ProxyError(Exception):
    """An error answered to the client as is."""

    def __init__(
        self, status: int, message: str, type: str | None = None, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or ERROR_TYPES.get(status, "api_error")
        self.param = param
        self.code = code


def error_body(
    status: int, message: str, type: str | None = None, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type or ERROR_TYPES.get(status, "api_error"), "param": param, "code": code}}


def error_response(exc: BaseException) -> Response:
    """The response for an exception raised while handling a request."""
    if isinstance(exc, ProxyError):
        status, body = exc.status, error_body(exc.status, exc.message, exc.type, exc.param, exc.code)
    elif isinstance(exc, ConfigurationError):  # a bad parameter, named in the message
        status, body = 400, error_body(400, str(exc))
    elif isinstance(exc, APIError):  # the upstream's status and its own message
        status = exc.status_code if isinstance(exc.status_code, int) and 400 <= exc.status_code < 600 else 502
        body = error_body(status, exc.message)
    else:
        status, body = 500, error_body(500, f"internal error ({type(exc).__name__})")
    return Response(orjson.dumps(body), status, media_type="application/json")
