"""Delivering success and failure events to ``llmstash.callbacks``."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from llmstash._core.keys import is_keyed
from llmstash._request import PAYLOAD_OF_FAMILY, Request
from llmstash.integrations.custom_logger import CustomLogger

logger = logging.getLogger("llmstash")
_warned_types: set[str] = set()


def handlers(callbacks: Any) -> list[CustomLogger]:
    """The CustomLogger instances in ``callbacks``; anything else is skipped with one warning."""
    found = []
    for handler in callbacks or ():
        if isinstance(handler, CustomLogger):
            found.append(handler)
        elif type(handler).__name__ not in _warned_types:
            _warned_types.add(type(handler).__name__)
            logger.warning("llmstash.callbacks holds a %s, not a CustomLogger instance; it is skipped", type(handler).__name__)
    return found


def event_kwargs(
    request: Request, cache_hit: bool, cache_key: str | None, exception: BaseException | None = None
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "model": request.model,
        "call_type": request.call_type,
        PAYLOAD_OF_FAMILY[request.family]: request.payload,
        "optional_params": {k: v for k, v in request.params.items() if is_keyed(k)},
        "cache_hit": cache_hit,
        "cache_key": cache_key,
    }
    if exception is not None:
        kwargs["exception"] = exception
    return kwargs


def _handler_failed(handler: CustomLogger, exc: Exception) -> None:
    logger.warning("llmstash: callback %s raised %s; ignored", type(handler).__name__, type(exc).__name__)


def notify(found: list[CustomLogger], kwargs: dict[str, Any], response: Any, start: datetime, failed: bool) -> None:
    end = datetime.now()
    for handler in found:
        try:
            if failed:
                handler.log_failure_event(kwargs, response, start, end)
            else:
                handler.log_success_event(kwargs, response, start, end)
        except Exception as exc:
            _handler_failed(handler, exc)


async def anotify(found: list[CustomLogger], kwargs: dict[str, Any], response: Any, start: datetime, failed: bool) -> None:
    end = datetime.now()
    for handler in found:
        try:
            if failed:
                await handler.async_log_failure_event(kwargs, response, start, end)
            else:
                await handler.async_log_success_event(kwargs, response, start, end)
        except Exception as exc:
            _handler_failed(handler, exc)


class Events:
    """Callback delivery for one call; does nothing when ``llmstash.callbacks`` is empty."""

    __slots__ = ("handlers", "key", "request", "start")

    def __init__(self, request: Request, key: str | None, callbacks: Any) -> None:
        self.handlers = handlers(callbacks) if callbacks else None
        self.request = request
        self.key = key
        self.start = datetime.now() if self.handlers else datetime.min

    def sync(self, response: Any, hit: bool, exc: BaseException | None = None) -> None:
        if self.handlers:
            notify(self.handlers, event_kwargs(self.request, hit, self.key, exc), response, self.start, failed=exc is not None)

    async def asynchronous(self, response: Any, hit: bool, exc: BaseException | None = None) -> None:
        if self.handlers:
            await anotify(
                self.handlers, event_kwargs(self.request, hit, self.key, exc), response, self.start, failed=exc is not None
            )
