"""llmstash: a cache in front of LLM API calls, in LiteLLM's caching dialect.

    import llmstash
    from llmstash.caching import Cache

    llmstash.cache = Cache()                      # in-memory; Cache(type="disk") persists
    r1 = llmstash.completion(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
    r2 = llmstash.completion(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
    assert r2._hidden_params["cache_hit"] and r2.id == r1.id

``import llmstash as litellm`` keeps code written for ``litellm.cache`` working.
"""

from __future__ import annotations

from typing import Any

from llmstash._calls import (
    acompletion,
    aembedding,
    atext_completion,
    atranscription,
    completion,
    embedding,
    text_completion,
    transcription,
)
from llmstash.caching import Cache, CacheMode, disable_cache, enable_cache, update_cache
from llmstash.exceptions import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    Timeout,
)
from llmstash.router import Router
from llmstash.types import EmbeddingResponse, ModelResponse, ModelResponseStream, TextCompletionResponse, TranscriptionResponse

__version__ = "0.1.0"

cache: Cache | None = None
"""The active cache; None (the default) means no call is cached."""

callbacks: list[Any] = []
"""CustomLogger instances notified of every call (see llmstash.integrations.custom_logger)."""

__all__ = [
    "APIConnectionError",
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "Cache",
    "CacheMode",
    "ConfigurationError",
    "EmbeddingResponse",
    "InternalServerError",
    "ModelResponse",
    "ModelResponseStream",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "Router",
    "ServiceUnavailableError",
    "TextCompletionResponse",
    "TranscriptionResponse",
    "Timeout",
    "acompletion",
    "aembedding",
    "atext_completion",
    "atranscription",
    "cache",
    "callbacks",
    "completion",
    "disable_cache",
    "embedding",
    "enable_cache",
    "text_completion",
    "transcription",
    "update_cache",
]
