"""Exceptions raised by llmstash.

The tree::

    LlmstashError
    ├── ConfigurationError (also ValueError)   bad Cache(...) arguments, bad cache controls
    ├── CacheBackendError                      a storage backend failed; never reaches a
    │   └── CorruptEntryError                  completion call (the engine fails open)
    └── APIError                               the upstream LLM API answered with an error
        ├── BadRequestError            400
        ├── AuthenticationError        401
        ├── PermissionDeniedError      403
        ├── NotFoundError              404
        ├── UnprocessableEntityError   422
        ├── RateLimitError             429
        ├── InternalServerError        500 and other 5xx
        │   └── ServiceUnavailableError  503
        └── APIConnectionError         no answer at all (connection refused, DNS, reset)
            └── Timeout                the upstream did not answer in time

Every ``APIError`` carries ``status_code`` (``None`` for connection errors), ``model`` and
``llm_provider``. Cache backend failures are logged (keys and hashes only) and counted in
``Cache.stats()``; the user's call goes to the upstream instead.
"""

from __future__ import annotations


class LlmstashError(Exception):
    """Base class of every exception llmstash raises."""


class ConfigurationError(LlmstashError, ValueError):
    """A parameter has a value llmstash cannot use; the message names it and the valid values."""


class CacheBackendError(LlmstashError):
    """A storage backend failed to read, write or delete an entry."""


class CorruptEntryError(CacheBackendError):
    """A stored entry could not be decoded (damaged, truncated or from an unknown version)."""


class APIError(LlmstashError):
    """The upstream API answered with an error status, or could not be reached."""

    status_code: int | None = None

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        model: str | None = None,
        llm_provider: str | None = None,
        body: object = None,
    ) -> None:
        if status_code is not None:
            self.status_code = status_code
        self.message = message
        self.model = model
        self.llm_provider = llm_provider
        self.body = body
        prefix = f"{self.status_code} " if self.status_code is not None else ""
        super().__init__(f"{prefix}{type(self).__name__}: {message}")


class BadRequestError(APIError):
    status_code = 400


class AuthenticationError(APIError):
    status_code = 401


class PermissionDeniedError(APIError):
    status_code = 403


class NotFoundError(APIError):
    status_code = 404


class UnprocessableEntityError(APIError):
    status_code = 422


class RateLimitError(APIError):
    status_code = 429


class InternalServerError(APIError):
    status_code = 500


class ServiceUnavailableError(InternalServerError):
    status_code = 503


class APIConnectionError(APIError):
    status_code = None


class Timeout(APIConnectionError):
    """The upstream did not answer within the call's ``timeout``."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def error_for_status(status_code: int) -> type[APIError]:
    """The exception class for an HTTP error status from the upstream."""
    if status_code in _BY_STATUS:
        return _BY_STATUS[status_code]
    if status_code >= 500:
        return InternalServerError
    return APIError


__all__ = [
    "APIConnectionError",
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "CacheBackendError",
    "ConfigurationError",
    "CorruptEntryError",
    "InternalServerError",
    "LlmstashError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServiceUnavailableError",
    "Timeout",
    "UnprocessableEntityError",
    "error_for_status",
]
