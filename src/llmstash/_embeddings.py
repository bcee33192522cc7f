"""Embedding batches through the cache, item by item (the pure parts are in ``_core.batches``).

Only the items the cache does not hold go upstream, in one request. The answer's ``usage`` is
what the upstream billed for those items (zero when none were sent); ``_hidden_params`` says how
many items were served from the cache (``cached_items`` of ``total_items``), and ``cache_hit`` is
True only when no item went upstream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmstash import _upstream
from llmstash._core.batches import fresh_vectors, merge, missing_items, split_input
from llmstash._core.keys import with_namespace
from llmstash.exceptions import APIError
from llmstash.types import EmbeddingResponse

if TYPE_CHECKING:
    from llmstash._core.envelope import Entry
    from llmstash._engine import Call

NO_USAGE = {"prompt_tokens": 0, "total_tokens": 0}


def _keys(call: Call, items: list[Any]) -> list[str]:
    assert call.cache is not None
    prefix = with_namespace("", call.cache.namespace, call.request.controls.namespace)
    return [prefix + key for key in call.request.item_keys(items)]


def _answer(
    call: Call, keys: list[str], entries: list[Entry | None], fresh: dict[str, dict[str, Any]], body: dict[str, Any] | None
) -> EmbeddingResponse:
    found = [entry.data if entry is not None and isinstance(entry.data, dict) else None for entry in entries]
    cached_model = next((item.get("model") for item in found if item is not None and item.get("model")), None)
    answer = EmbeddingResponse(
        {
            "object": "list",
            "data": merge(keys, found, fresh),
            "model": (body or {}).get("model") or cached_model or call.request.route.model,
            "usage": (body.get("usage") if body else None) or dict(NO_USAGE),
        }
    )
    cached = sum(entry is not None for entry in entries)
    answer._hidden_params = {
        "cache_hit": body is None,
        "cache_key": None,
        "cached_items": cached,
        "total_items": len(keys),
        "model": call.request.model,
    }
    return answer


def _vectors(call: Call, missing: list[tuple[str, Any]], body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    try:
        return fresh_vectors(missing, body)
    except ValueError as exc:
        raise APIError(str(exc), model=call.request.route.model, llm_provider=call.request.route.provider) from None


def run_batch(call: Call) -> EmbeddingResponse:
    cache, plan = call.cache, call.plan
    assert cache is not None and plan is not None
    items = split_input(call.request.payload)
    keys = _keys(call, items)
    entries: list[Entry | None] = cache.read_items(keys, plan.max_age) if plan.read else [None] * len(keys)
    missing = missing_items(keys, items, entries)
    body = None
    fresh: dict[str, dict[str, Any]] = {}
    if missing:
        try:
            body = _upstream.call(call.request, payload=[item for _, item in missing])
            fresh = _vectors(call, missing, body)
        except Exception as exc:
            call.events.sync(None, False, exc)
            raise
        if plan.write:
            cache.write_items(list(fresh.items()), plan.ttl)
    answer = _answer(call, keys, entries, fresh, body)
    call.events.sync(answer, body is None)
    return answer


async def arun_batch(call: Call) -> EmbeddingResponse:
    cache, plan = call.cache, call.plan
    assert cache is not None and plan is not None
    items = split_input(call.request.payload)
    keys = _keys(call, items)
    entries: list[Entry | None] = await cache.aread_items(keys, plan.max_age) if plan.read else [None] * len(keys)
    missing = missing_items(keys, items, entries)
    body = None
    fresh: dict[str, dict[str, Any]] = {}
    if missing:
        try:
            body = await _upstream.acall(call.request, payload=[item for _, item in missing])
            fresh = _vectors(call, missing, body)
        except Exception as exc:
            await call.events.asynchronous(None, False, exc)
            raise
        if plan.write:
            await cache.awrite_items(list(fresh.items()), plan.ttl)
    answer = _answer(call, keys, entries, fresh, body)
    await call.events.asynchronous(answer, body is None)
    return answer
