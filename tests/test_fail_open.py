"""Fail open: a broken backend or a damaged entry never fails a call, and logs stay clean."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from typing import Any

import pytest

import llmstash
from llmstash import acompletion, aembedding, completion, embedding
from llmstash._core.envelope import encode
from llmstash.backends.base import Storage
from llmstash.caching import Cache

PROMPT = "PROMPT-TEXT-7f3a: the purple elephant recites its password"
API_KEY = "sk-test-SECRET-KEY-5c1d9e"
EMBED_INPUT = "EMBED-TEXT-b41e: vectors of the secret garden"


class BackendDown(Exception):
    pass


class AnotherFailure(OSError):
    pass


class BrokenStorage(Storage):
    """Every operation raises; the message carries the key and value, which must never be logged."""

    name = "broken"

    def __init__(self) -> None:
        self.exc_type: type[Exception] = BackendDown
        self.calls = 0

    def _fail(self, *details: Any) -> None:
        self.calls += 1
        raise self.exc_type(f"backend down while handling {details!r}")

    def get(self, key: str) -> bytes | None:
        self._fail(key)
        return None

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        self._fail(key, value)

    def delete(self, key: str) -> None:
        self._fail(key)

    def clear(self) -> None:
        self._fail()

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self._fail(keys)
        return []

    def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        self._fail(items)

    async def aget(self, key: str) -> bytes | None:
        self._fail(key)
        return None

    async def aset(self, key: str, value: bytes, ttl: float | None) -> None:
        self._fail(key, value)

    async def adelete(self, key: str) -> None:
        self._fail(key)

    async def aget_many(self, keys: Sequence[str]) -> list[bytes | None]:
        self._fail(keys)
        return []

    async def aset_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        self._fail(items)


def chat_kwargs(upstream: Any, content: str = PROMPT) -> dict[str, Any]:
    return dict(model="openai/demo", messages=[{"role": "user", "content": content}], api_base=upstream.base_url, api_key=API_KEY)


def all_log_text(caplog: pytest.LogCaptureFixture) -> str:
    parts = [caplog.text]
    for record in caplog.records:
        parts.append(record.getMessage())
        parts.append(repr(record.args))
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(str(record.exc_info[1]))
    return "\n".join(parts)


def llmstash_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("llmstash") and r.levelno >= logging.WARNING]


def test_broken_storage_never_fails_a_call(upstream: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cache = Cache()
    broken = BrokenStorage()
    cache.storage = broken
    llmstash.cache = cache
    responses: list[Any] = []

    for _ in range(3):
        responses.append(completion(**chat_kwargs(upstream)))
    for _ in range(3):
        responses.append(asyncio.run(acompletion(**chat_kwargs(upstream))))
    for _ in range(3):
        responses.append(
            embedding(model="openai/text-embedding-3-small", input=[EMBED_INPUT], api_base=upstream.base_url, api_key=API_KEY)
        )
    responses.append(
        asyncio.run(aembedding(model="openai/text-embedding-3-small", input=EMBED_INPUT, api_base=upstream.base_url))
    )

    assert all(r._hidden_params["cache_hit"] is False for r in responses)
    assert len({r.id for r in responses[:6]}) == 6  # every chat call went upstream
    assert upstream.call_count("chat/completions") == 6
    assert upstream.call_count("embeddings") == 4
    assert len(responses[6].data[0].embedding) == 8

    stats = cache.stats()
    assert stats["errors"] == 2 * 10  # one failed read and one failed write per call
    # the storage also saw each chat leader's quiet re-check before going upstream (not counted)
    assert broken.calls == 2 * 10 + 6
    assert (stats["hits"], stats["writes"]) == (0, 0)

    warnings = llmstash_warnings(caplog)
    assert len(warnings) == 2  # one per (operation, exception type), however many calls failed
    assert {("read" in r.getMessage(), "write" in r.getMessage()) for r in warnings} == {(True, False), (False, True)}
    assert all("BackendDown" in r.getMessage() for r in warnings)

    text = all_log_text(caplog)
    assert PROMPT not in text and "purple elephant" not in text
    assert EMBED_INPUT not in text and "secret garden" not in text
    assert API_KEY not in text
    answer = responses[0].choices[0].message.content
    assert answer and answer not in text
    assert "backend down while handling" not in text  # exception messages are not logged


def test_one_warning_per_operation_and_exception_type(upstream: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="llmstash")
    cache = Cache()
    broken = BrokenStorage()
    cache.storage = broken
    llmstash.cache = cache

    for _ in range(4):
        completion(**chat_kwargs(upstream))
    assert len(llmstash_warnings(caplog)) == 2
    broken.exc_type = AnotherFailure
    for _ in range(4):
        asyncio.run(acompletion(**chat_kwargs(upstream)))
    broken.exc_type = BackendDown
    completion(**chat_kwargs(upstream))

    warnings = llmstash_warnings(caplog)
    kinds = sorted(
        (
            "read" if " read " in r.getMessage() else "write",
            "AnotherFailure" if "AnotherFailure" in r.getMessage() else "BackendDown",
        )
        for r in warnings
    )
    assert kinds == [("read", "AnotherFailure"), ("read", "BackendDown"), ("write", "AnotherFailure"), ("write", "BackendDown")]
    assert cache.stats()["errors"] == 2 * 9
    # the repeats are still logged, below warning level
    repeats = [
        r for r in caplog.records if r.name.startswith("llmstash") and r.levelno < logging.WARNING and "failed" in r.getMessage()
    ]
    assert len(repeats) == 2 * 9 - 4


def test_direct_api_fails_open(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cache = Cache()
    cache.storage = BrokenStorage()
    cache.add_cache({"answer": PROMPT}, cache_key="k")
    assert cache.get_cache(cache_key="k") is None
    asyncio.run(cache.async_add_cache({"answer": PROMPT}, cache_key="k"))
    assert asyncio.run(cache.async_get_cache(cache_key="k")) is None
    assert cache.stats()["errors"] == 4
    assert PROMPT not in all_log_text(caplog)


# ----- corrupt entries --------------------------------------------------------------------------

_rng = random.Random(20240611)
_valid = encode("chat", {"id": "chatcmpl-planted", "object": "chat.completion", "choices": []}, 1_700_000_000.0, None)

CORRUPT = {
    "random-bytes": b"\x89" + _rng.randbytes(255),
    "empty": b"",
    "magic-only": b"LS",
    "truncated-envelope": _valid[: len(_valid) // 2],
    "future-version": b"LS\x02" + _valid[3:],
    "magic-with-junk-json": b"LS\x01{this is : not json",
    "magic-with-non-utf8": b"LS\x01\xff\xfe\xfd",
    "wrong-shape": b'LS\x01{"kind": "chat"}',
    "unknown-kind": b'LS\x01["pickle", 1, null, {}]',
    "unhashable-kind": b'LS\x01[["chat"], 1, null, {}]',
    "bad-created-at": b'LS\x01["chat", "yesterday", null, {}]',
}


@pytest.fixture(params=sorted(CORRUPT))
def corrupt(request: pytest.FixtureRequest) -> bytes:
    return CORRUPT[request.param]


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_corrupt_entry_is_a_miss_and_deleted(
    upstream: Any, corrupt: bytes, use_async: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cache = Cache()
    llmstash.cache = cache
    kwargs = chat_kwargs(upstream)
    key = cache.get_cache_key(model=kwargs["model"], messages=kwargs["messages"], api_base=kwargs["api_base"])
    cache.storage.set(key, corrupt, None)

    call = dict(kwargs, cache={"no-store": True})  # so the deletion is observable
    response = asyncio.run(acompletion(**call)) if use_async else completion(**call)

    assert response._hidden_params["cache_hit"] is False
    assert response._hidden_params["cache_key"] == key
    assert upstream.call_count("chat/completions") == 1
    assert cache.storage.get(key) is None
    stats = cache.stats()
    assert (stats["corrupt"], stats["misses"], stats["errors"]) == (1, 1, 0)
    assert PROMPT not in all_log_text(caplog)


def test_corrupt_entry_is_replaced_by_the_fresh_answer(upstream: Any) -> None:
    cache = Cache()
    llmstash.cache = cache
    kwargs = chat_kwargs(upstream)
    key = cache.get_cache_key(**kwargs)
    cache.storage.set(key, CORRUPT["truncated-envelope"], None)

    first = completion(**kwargs)
    second = completion(**kwargs)
    assert first._hidden_params["cache_hit"] is False
    assert second._hidden_params["cache_hit"] is True and second.id == first.id
    assert upstream.call_count("chat/completions") == 1
    assert cache.stats()["corrupt"] == 1


def test_corrupt_entry_through_direct_api(corrupt: bytes) -> None:
    cache = Cache()
    cache.storage.set("k", corrupt, None)
    assert cache.get_cache(cache_key="k") is None
    assert cache.storage.get("k") is None
    cache.storage.set("k", corrupt, None)
    assert asyncio.run(cache.async_get_cache(cache_key="k")) is None
    assert cache.storage.get("k") is None
    assert cache.stats()["corrupt"] == 2


# ----- user overrides that raise -----------------------------------------------------------------


def _raising_add(result: Any, *args: Any, **kwargs: Any) -> None:
    raise RuntimeError(f"custom add failed for {kwargs.get('messages')}")


def _raising_get(*args: Any, **kwargs: Any) -> Any:
    raise KeyError(f"custom get failed for {kwargs.get('messages')}")


async def _raising_async_add(result: Any, *args: Any, **kwargs: Any) -> None:
    raise RuntimeError("custom async add failed")


async def _raising_async_get(*args: Any, **kwargs: Any) -> Any:
    raise ConnectionError("custom async get failed")


@pytest.mark.parametrize("override", ["add", "get", "both"])
def test_raising_overrides_do_not_fail_the_call(upstream: Any, override: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cache = Cache()
    if override in ("add", "both"):
        cache.add_cache = _raising_add  # type: ignore[method-assign]
    if override in ("get", "both"):
        cache.get_cache = _raising_get  # type: ignore[method-assign]
    llmstash.cache = cache

    first = completion(**chat_kwargs(upstream))
    second = asyncio.run(acompletion(**chat_kwargs(upstream)))
    assert first._hidden_params["cache_hit"] is False
    assert second._hidden_params["cache_hit"] is False
    assert upstream.call_count("chat/completions") == 2
    expected_errors = {"add": 2, "get": 2, "both": 4}[override]
    assert cache.stats()["errors"] == expected_errors
    assert PROMPT not in all_log_text(caplog)


def test_raising_async_overrides_do_not_fail_the_call(upstream: Any) -> None:
    cache = Cache()
    cache.async_add_cache = _raising_async_add  # type: ignore[method-assign]
    cache.async_get_cache = _raising_async_get  # type: ignore[method-assign]
    llmstash.cache = cache
    response = asyncio.run(acompletion(**chat_kwargs(upstream)))
    assert response._hidden_params["cache_hit"] is False
    assert upstream.call_count("chat/completions") == 1
    assert cache.stats()["errors"] == 2
    # the sync path does not use the async overrides: it caches normally
    completion(**chat_kwargs(upstream))
    assert completion(**chat_kwargs(upstream))._hidden_params["cache_hit"] is True
    assert upstream.call_count("chat/completions") == 2


def test_corrupt_entries_warn_once_however_many_are_read(upstream: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="llmstash")
    cache = Cache()
    llmstash.cache = cache
    for number in range(3):
        kwargs = chat_kwargs(upstream, content=f"{PROMPT} {number}")
        cache.storage.set(cache.get_cache_key(**kwargs), b"garbage", None)
        assert completion(**kwargs)._hidden_params["cache_hit"] is False
    assert cache.stats()["corrupt"] == 3
    assert len(llmstash_warnings(caplog)) == 1


def test_failed_reads_count_as_misses(upstream: Any) -> None:
    cache = Cache()
    cache.storage = BrokenStorage()
    llmstash.cache = cache
    for _ in range(3):
        completion(**chat_kwargs(upstream))
    stats = cache.stats()
    assert (stats["hits"], stats["misses"]) == (0, 3)
