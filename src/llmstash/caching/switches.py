"""``enable_cache``, ``update_cache`` and ``disable_cache``: set ``llmstash.cache`` in one call."""

from __future__ import annotations

from typing import Any

import llmstash
from llmstash.caching.cache import Cache


def enable_cache(
    type: str = "local",
    host: str | None = None,
    port: int | str | None = None,
    password: str | None = None,
    supported_call_types: list[str] | None = None,
    **kwargs: Any,
) -> Cache:
    """Make a Cache with these parameters the active one (``llmstash.cache``) and return it."""
    cache = Cache(type=type, host=host, port=port, password=password, supported_call_types=supported_call_types, **kwargs)
    llmstash.cache = cache
    return cache


def update_cache(
    type: str = "local",
    host: str | None = None,
    port: int | str | None = None,
    password: str | None = None,
    supported_call_types: list[str] | None = None,
    **kwargs: Any,
) -> Cache:
    """Replace the active cache with one made from these parameters; the old one is closed."""
    previous = llmstash.cache
    cache = enable_cache(type=type, host=host, port=port, password=password, supported_call_types=supported_call_types, **kwargs)
    if previous is not None and previous is not cache:
        previous.close()
    return cache


def disable_cache() -> None:
    """Switch caching off: ``llmstash.cache`` becomes None (entries stay in their backend)."""
    llmstash.cache = None
