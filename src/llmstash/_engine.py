"""The engine: one call from request to answer — hit, single flight, upstream, store, callbacks.

``run`` and ``arun`` are the only two paths; they differ only in the awaited I/O. A call that
uses the cache reads it; on a miss it joins the flight for its key: the leader calls upstream and
stores the answer, identical calls that arrive meanwhile wait for the leader and get a copy of its
answer (marked as a hit). Embedding batches go item by item (see ``_embeddings``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson

import llmstash
from llmstash import _embeddings, _upstream
from llmstash._callbacks import Events
from llmstash._core import streams
from llmstash._core.envelope import Entry
from llmstash._core.keys import digest
from llmstash._flight import Flight, TaskFlight, waited_too_long
from llmstash._request import Request, build_request
from llmstash._streaming import AsyncResponseStream, ResponseStream, acapture, as_async, capture
from llmstash.caching.cache import Cache, Plan
from llmstash.exceptions import CacheBackendError, ConfigurationError
from llmstash.types import RESPONSE_KINDS, OpenAIObject

logger = logging.getLogger("llmstash")

LOCK_SECONDS = 120.0
"""Longest hold of a cross-process single-flight lock (a crashed leader frees it by then)."""
POLL_SECONDS = 0.05
"""How often a process waiting for another process's answer looks for it."""

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
            return _hit(call, entry.data, None if type(entry) is Entry else getattr(entry, "similarity", None))
        flight, leader = active.thread_flights.join(plan.key)
        if leader:
            return _lead(call, flight, deadline)
        if flight.led_by_caller():  # the leader's stream is still unread here: waiting could only time out
            return _fetch(call, None)
        result = flight.wait(_remaining(deadline))
        if result is not None:  # None: the leader failed, try again (perhaps as the next leader)
            active.record("coalesced")
            return _hit(call, orjson.loads(result))


class _Landing:
    """A flight that also holds a cross-process lock: landing it releases the lock."""

    __slots__ = ("flight", "key", "locks", "token")

    def __init__(self, flight: Any, locks: Any, key: str, token: str) -> None:
        self.flight, self.locks, self.key, self.token = flight, locks, key, token

    def land(self, result: bytes | None) -> None:
        self.flight.land(result)
        try:
            self.locks.unlock(self.key, self.token)
        except Exception:  # the lock expires by itself
            logger.debug("llmstash: could not release the single-flight lock for key hash %s", digest(self.key))


class _AsyncLanding(_Landing):
    """The async twin: ``land`` hands the answer over; ``release`` (awaited) frees the lock."""

    __slots__ = ()

    def land(self, result: bytes | None) -> None:
        self.flight.land(result)

    async def release(self) -> None:
        try:
            await self.locks.aunlock(self.key, self.token)
        except Exception:
            logger.debug("llmstash: could not release the single-flight lock for key hash %s", digest(self.key))


async def _aland(flight: TaskFlight | _AsyncLanding | None, result: bytes | None) -> None:
    if flight is not None:
        flight.land(result)
        if isinstance(flight, _AsyncLanding):
            await flight.release()


def _shareable(data: dict[str, Any]) -> bytes | None:
    """The answer for the flight's waiters, or None (they fetch their own) when JSON cannot carry
    it (a lone surrogate in a mock_response): sharing it must not fail the leader's call."""
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError:
        return None


def _lock_seconds(deadline: float) -> float:
    return max(1.0, min(LOCK_SECONDS, _remaining(deadline)))


def _lead(call: Call, flight: Flight, deadline: float) -> Any:
    """Lead the flight: with a shared backend, first hold the key's lock across processes (or
    wait while another process holds it), then look once more for the answer, then fetch it."""
    active, plan = call.cache, call.plan
    assert active is not None and plan is not None
    holder: Flight | _Landing = flight
    try:
        if active.locks is not None:
            holder = _hold_lock(call, flight, deadline)
        entry = active.read(plan, call.request, count=False)  # an identical call may have just stored it
    except BaseException:
        holder.land(None)  # never leave waiters waiting for a leader that gave up
        raise
    if entry is None:
        return _fetch(call, holder)
    holder.land(orjson.dumps(entry.data))
    active.record("coalesced")
    return _hit(call, entry.data)


def _hold_lock(call: Call, flight: Flight, deadline: float) -> Flight | _Landing:
    """The flight holding the key's cross-process lock, or the bare flight once another process
    has stored the answer or when the lock backend fails (then: this process only)."""
    active, plan = call.cache, call.plan
    assert active is not None and plan is not None and active.locks is not None
    locks = active.locks
    try:
        while True:
            token = locks.try_lock(plan.key, _lock_seconds(deadline))
            if token is not None:
                return _Landing(flight, locks, plan.key, token)
            while locks.locked(plan.key):  # another process is fetching this answer
                if _remaining(deadline) <= 0:
                    raise waited_too_long(_upstream.timeout(call.request))
                time.sleep(POLL_SECONDS)
                if active.read(plan, call.request, count=False) is not None:
                    return flight
    except CacheBackendError:
        return flight


def _hit(call: Call, data: dict[str, Any], similarity: float | None = None) -> Any:
    answer = response(call, data, True)
    if similarity is not None:  # found by the semantic tier
        answer._hidden_params["semantic_similarity"] = similarity
    call.events.sync(answer, True)
    if call.request.stream:
        return ResponseStream(_replay(call, data), call.request.family, dict(answer._hidden_params))
    return answer


def _fetch(call: Call, flight: Flight | _Landing | None) -> Any:
    if call.request.stream:
        return _open_stream(call, flight)
    result = None
    try:
        data = _upstream.call(call.request)
        answer = response(call, data, False)
        call.store(answer)
        if flight is not None:
            result = _shareable(data)
    except Exception as exc:
        call.events.sync(None, False, exc)
        raise
    finally:
        if flight is not None:
            flight.land(result)
    call.events.sync(answer, False)
    return answer


def _open_stream(call: Call, flight: Flight | _Landing | None) -> ResponseStream:
    try:
        chunks = _upstream.open_stream(call.request, usage=call.stores)
    except BaseException as exc:  # KeyboardInterrupt too: the waiters must not wait for nothing
        if flight is not None:
            flight.land(None)
        if isinstance(exc, Exception):
            call.events.sync(None, False, exc)
        raise

    def finish(data: dict[str, Any] | None, error: BaseException | None) -> None:
        result = None
        try:
            if data is not None:
                answer = response(call, data, False)
                call.store(answer)
                result = _shareable(data)
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
            return await _ahit(call, entry.data, None if type(entry) is Entry else getattr(entry, "similarity", None))
        flight, leader = active.task_flights.join(plan.key)
        if leader:
            return await _alead(call, flight, deadline)
        if flight.led_by_caller():
            return await _afetch(call, None)
        result = await flight.wait(_remaining(deadline))
        if result is not None:
            active.record("coalesced")
            return await _ahit(call, orjson.loads(result))


async def _alead(call: Call, flight: TaskFlight, deadline: float) -> Any:
    """The async twin of :func:`_lead`."""
    active, plan = call.cache, call.plan
    assert active is not None and plan is not None
    holder: TaskFlight | _AsyncLanding = flight
    try:
        if active.locks is not None:
            holder = await _ahold_lock(call, flight, deadline)
        entry = await active.aread(plan, call.request, count=False)
    except BaseException:
        await _aland(holder, None)
        raise
    if entry is None:
        return await _afetch(call, holder)
    await _aland(holder, orjson.dumps(entry.data))
    active.record("coalesced")
    return await _ahit(call, entry.data)


async def _ahold_lock(call: Call, flight: TaskFlight, deadline: float) -> TaskFlight | _AsyncLanding:
    """The async twin of :func:`_hold_lock`."""
    active, plan = call.cache, call.plan
    assert active is not None and plan is not None and active.locks is not None
    locks = active.locks
    try:
        while True:
            token = await locks.atry_lock(plan.key, _lock_seconds(deadline))
            if token is not None:
                return _AsyncLanding(flight, locks, plan.key, token)
            while await locks.alocked(plan.key):
                if _remaining(deadline) <= 0:
                    raise waited_too_long(_upstream.timeout(call.request))
                await asyncio.sleep(POLL_SECONDS)
                if await active.aread(plan, call.request, count=False) is not None:
                    return flight
    except CacheBackendError:
        return flight


async def _ahit(call: Call, data: dict[str, Any], similarity: float | None = None) -> Any:
    answer = response(call, data, True)
    if similarity is not None:
        answer._hidden_params["semantic_similarity"] = similarity
    await call.events.asynchronous(answer, True)
    if call.request.stream:
        return AsyncResponseStream(as_async(_replay(call, data)), call.request.family, dict(answer._hidden_params))
    return answer


async def _afetch(call: Call, flight: TaskFlight | _AsyncLanding | None) -> Any:
    if call.request.stream:
        return await _aopen_stream(call, flight)
    result = None
    try:
        data = await _upstream.acall(call.request)
        answer = response(call, data, False)
        await call.astore(answer)
        if flight is not None:
            result = _shareable(data)
    except Exception as exc:
        await call.events.asynchronous(None, False, exc)
        raise
    finally:
        await _aland(flight, result)
    await call.events.asynchronous(answer, False)
    return answer


async def _aopen_stream(call: Call, flight: TaskFlight | _AsyncLanding | None) -> AsyncResponseStream:
    try:
        chunks = await _upstream.aopen_stream(call.request, usage=call.stores)
    except BaseException as exc:  # a cancelled task too: the waiters must not wait for nothing
        await _aland(flight, None)
        if isinstance(exc, Exception):
            await call.events.asynchronous(None, False, exc)
        raise

    async def finish(data: dict[str, Any] | None, error: BaseException | None) -> None:
        result = None
        try:
            if data is not None:
                answer = response(call, data, False)
                await call.astore(answer)
                result = _shareable(data)
                await call.events.asynchronous(answer, False)
            elif error is not None:
                await call.events.asynchronous(None, False, error)
        finally:
            await _aland(flight, result)

    family = call.request.family
    chunks_out = await acapture(chunks, family, _shows_usage(call.request), finish)
    return AsyncResponseStream(chunks_out, family, hidden_params(call, False))
