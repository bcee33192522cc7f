"""``CustomLogger``: subclass it and put an instance in ``llmstash.callbacks``.

Sync calls invoke ``log_success_event`` / ``log_failure_event``; async calls await
``async_log_success_event`` / ``async_log_failure_event``, whose defaults call the sync methods,
so a handler that only overrides the sync ones sees every call. ``kwargs`` holds ``model``,
``call_type``, the payload (``messages``, ``prompt`` or ``input``), ``optional_params`` (the keyed
parameters, never secrets), ``cache_hit`` (bool) and ``cache_key`` (None when the call did not use
the cache). ``start_time`` and ``end_time`` are ``datetime`` objects. An exception raised by a
handler is logged and never reaches the caller.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


class CustomLogger:
    def log_success_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: datetime, end_time: datetime) -> None:
        """Called after a sync call returned (hit or miss)."""

    def log_failure_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: datetime, end_time: datetime) -> None:
        """Called after a sync call raised; ``kwargs["exception"]`` holds the exception."""

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: datetime, end_time: datetime
    ) -> None:
        """Awaited after an async call returned; by default calls ``log_success_event``."""
        self.log_success_event(kwargs, response_obj, start_time, end_time)

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: datetime, end_time: datetime
    ) -> None:
        """Awaited after an async call raised; by default calls ``log_failure_event``."""
        self.log_failure_event(kwargs, response_obj, start_time, end_time)
