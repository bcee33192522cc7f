"""The engine: one call from request to answer — hit, single flight, upstream, store, callbacks.

``run`` and ``arun`` are the only two paths; they differ only in the awaited I/O. A call that
uses the cache reads it; on a miss it joins the flight for its key: the leader calls upstream and
stores the answer, identical calls that arrive meanwhile wait for the leader and get a copy of its
answer (marked as a hit). Embedding batches go item by item (see ``_embeddings``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

import llmstash
from llmstash import _embeddings, _upstream
from llmstash._callbacks import Events
from llmstash._core import streams
from llmstash._flight import Flight, TaskFlight
from llmstash._request import Request, build_request
from llmstash._streaming import AsyncResponseStream, ResponseStream, acapture, as_async, capture
from llmstash.caching.cache import Cache, Plan
from llmstash.exceptions import ConfigurationError
from llmstash.types import RESPONSE_KINDS, OpenAIObject

ACTIVE: Any = object()
"""Default of ``cache=``: use ``llmstash.cache`` at call time."""


@dataclass(slots=True)
class Call:
    request: Request
    cache: Cache | None
    plan: Plan | None
    events: Events

    @property
    def key(self) -> str | None:
        return self.plan.key if self.plan is not None else None

    @property
    def stores(self) -> bool:
        return self.plan is not None and self.plan.write

    def store(self, answer: OpenAIObject) -> None:
        if self.cache is not None and self.plan is not None and self.plan.write:
            self.cache.write(self.plan, self.request, answer)

    async def astore(self, answer: OpenAIObject) -> None:
        if self.cache is not None and self.plan is not None and self.plan.write:
            await self.cache.awrite(self.plan, self.request, answer)


def prepare(call_type: str, kwargs: dict[str, Any], cache: Any = ACTIVE, caching_group: str | None = None) -> Call:
    request = build_request(call_type, kwargs)
    request.caching_group = caching_group
    if request.stream and request.family == "embedding":
        raise ConfigurationError("stream=True applies to completion and text_completion calls, not embeddings")
    active: Cache | None = llmstash.cache if cache is ACTIVE else cache
    plan = active.plan(request) if active is not None else None
    return Call(request, active, plan, Events(request, plan.key if plan else None, llmstash.callbacks))


def hidden_params(call: Call, hit: bool) -> dict[str, Any]:
    return {"cache_hit": hit, "cache_key": call.key, "model": call.request.model}


def response(call: Call, data: dict[str, Any], hit: bool) -> OpenAIObject:
    answer = RESPONSE_KINDS[call.request.family](data)
    answer._hidden_params = hidden_params(call, hit)
    return answer


def _shows_usage(request: Request) -> bool:
    return bool((request.params.get("stream_options") or {}).get("include_usage"))


def _replay(call: Call, data: dict[str, Any]) -> Any:
    return streams.replay(call.request.family, data, _shows_usage(call.request))


def _batched(call: Call) -> bool:
    return call.request.family == "embedding" and call.plan is not None and call.cache is not None and not call.cache.customized


def _remaining(deadline: float) -> float:
    return deadline - time.monotonic()


# ----- sync ---------------------------------------------------------------------------------------


def run(call_type: str, kwargs: dict[str, Any], cache: Any = ACTIVE, caching_group: str | None = None) -> Any:
    call = prepare(call_type, kwargs, cache, caching_group)
    if _batched(call):
        return _embeddings.run_batch(call)
    plan, active = call.plan, call.cache
    if plan is None or active is None or not plan.read:
        return _fetch(call, None)
    deadline = time.monotonic() + _upstream.timeout(call.request)
    while True:
        entry = active.read(plan, call.request)
        if entry is not None:
            return _hit(call, entry.data)
        flight, leader = active.thread_flights.join(plan.key)
        if leader:
            entry = active.read(plan, call.request, count=False)  # an identical call may have just landed
            if entry is not None:
                flight.land(None)
                return _hit(call, entry.data)
            return _fetch(call, flight)
        result = flight.wait(_remaining(deadline))
        if result is not None:  # None: the leader failed, try again (perhaps as the next leader)
            active.record("coalesced")
            return _hit(call, orjson.loads(result))


def _hit(call: Call, data: dict[str, Any]) -> Any:
    answer = response(call, data, True)
    call.events.sync(answer, True)
    if call.request.stream:
        return ResponseStream(_replay(call, data), call.request.family, hidden_params(call, True))
    return answer


def _fetch(call: Call, flight: Flight | None) -> Any:
    if call.request.stream:
        return _open_stream(call, flight)
    result = None
    try:
        data = _upstream.call(call.request)
        answer = response(call, data, False)
        call.store(answer)
        if flight is not None:
            result = orjson.dumps(data)
    except Exception as exc:
        call.events.sync(None, False, exc)
        raise
    finally:
        if flight is not None:
            flight.land(result)
    call.events.sync(answer, False)
    return answer


def _open_stream(call: Call, flight: Flight | None) -> ResponseStream:
    try:
        chunks = _upstream.open_stream(call.request, usage=call.stores)
    except Exception as exc:
        if flight is not None:
            flight.land(None)
        call.events.sync(None, False, exc)
        raise

    def finish(data: dict[str, Any] | None, error: BaseException | None) -> None:
        result = None
        try:
            if data is not None:
                answer = response(call, data, False)
                call.store(answer)
                result = orjson.dumps(data)
                call.events.sync(answer, False)
            elif error is not None:
                call.events.sync(None, False, error)
        finally:
            if flight is not None:
                flight.land(result)

    family = call.request.family
    return ResponseStream(capture(chunks, family, _shows_usage(call.request), finish), family, hidden_params(call, False))


# ----- async --------------------------------------------------------------------------------------


async def arun(call_type: str, kwargs: dict[str, Any], cache: Any = ACTIVE, caching_group: str | None = None) -> Any:
    call = prepare(call_type, kwargs, cache, caching_group)
    if _batched(call):
        return await _embeddings.arun_batch(call)
    plan, active = call.plan, call.cache
    if plan is None or active is None or not plan.read:
        return await _afetch(call, None)
    deadline = time.monotonic() + _upstream.timeout(call.request)
    while True:
        entry = await active.aread(plan, call.request)
        if entry is not None:
            return await _ahit(call, entry.data)
        flight, leader = active.task_flights.join(plan.key)
        if leader:
            entry = await active.aread(plan, call.request, count=False)
            if entry is not None:
                flight.land(None)
                return await _ahit(call, entry.data)
            return await _afetch(call, flight)
        result = await flight.wait(_remaining(deadline))
        if result is not None:
            active.record("coalesced")
            return await _ahit(call, orjson.loads(result))


async def _ahit(call: Call, data: dict[str, Any]) -> Any:
    answer = response(call, data, True)
    await call.events.asynchronous(answer, True)
    if call.request.stream:
        return AsyncResponseStream(as_async(_replay(call, data)), call.request.family, hidden_params(call, True))
    return answer


async def _afetch(call: Call, flight: TaskFlight | None) -> Any:
    if call.request.stream:
        return await _aopen_stream(call, flight)
    result = None
    try:
        data = await _upstream.acall(call.request)
        answer = response(call, data, False)
        await call.astore(answer)
        if flight is not None:
            result = orjson.dumps(data)
    except Exception as exc:
        await call.events.asynchronous(None, False, exc)
        raise
    finally:
        if flight is not None:
            flight.land(result)
    await call.events.asynchronous(answer, False)
    return answer


async def _aopen_stream(call: Call, flight: TaskFlight | None) -> AsyncResponseStream:
    try:
        chunks = await _upstream.aopen_stream(call.request, usage=call.stores)
    except Exception as exc:
        if flight is not None:
            flight.land(None)
        await call.events.asynchronous(None, False, exc)
        raise

    async def finish(data: dict[str, Any] | None, error: BaseException | None) -> None:
        result = None
        try:
            if data is not None:
                answer = response(call, data, False)
                await call.astore(answer)
                result = orjson.dumps(data)
                await call.events.asynchronous(answer, False)
            elif error is not None:
                await call.events.asynchronous(None, False, error)
        finally:
            if flight is not None:
                flight.land(result)

    family = call.request.family
    chunks_out = acapture(chunks, family, _shows_usage(call.request), finish)
    return AsyncResponseStream(chunks_out, family, hidden_params(call, False))
