"""The in-process backend: true LRU, entry and byte bounds, TTL on the injected clock, threads."""

from __future__ import annotations

import random
import sys
import threading
from typing import Any

import pytest

import llmstash
from llmstash import completion
from llmstash.backends.memory import ENTRY_OVERHEAD, MemoryStorage
from llmstash.caching import Cache
from llmstash.exceptions import ConfigurationError


def cost(key: str, value: bytes) -> int:
    """What one entry is documented to charge against max_memory_bytes."""
    return len(key) + len(value) + ENTRY_OVERHEAD


def charged(storage: MemoryStorage) -> int:
    listed = storage.keys()  # a MemoryStorage method: keys from least to most recently used
    return sum(cost(key, storage.get(key) or b"") for key in listed)


# ----- LRU -------------------------------------------------------------------------------------


def test_eviction_order_is_least_recently_used() -> None:
    storage = MemoryStorage(max_size_in_memory=3)
    for key in "abc":
        storage.set(key, key.encode(), None)
    assert storage.keys() == ["a", "b", "c"]
    storage.set("d", b"d", None)
    assert storage.keys() == ["b", "c", "d"]
    assert storage.get("a") is None
    storage.set("e", b"e", None)
    assert storage.keys() == ["c", "d", "e"]
    assert storage.get_many(["a", "b"]) == [None, None]


def test_reading_an_entry_protects_it_from_eviction() -> None:
    storage = MemoryStorage(max_size_in_memory=3)
    for key in "abc":
        storage.set(key, key.encode(), None)
    assert storage.get("a") == b"a"  # a is now the most recently used
    storage.set("d", b"d", None)
    assert storage.keys() == ["c", "a", "d"]  # b was the least recently used
    assert storage.get("b") is None
    assert storage.get("a") == b"a"


def test_get_many_and_aget_also_count_as_use() -> None:
    import asyncio

    storage = MemoryStorage(max_size_in_memory=3)
    for key in "abc":
        storage.set(key, key.encode(), None)
    storage.get_many(["a"])
    asyncio.run(storage.aget("b"))
    storage.set("d", b"d", None)
    assert storage.get("c") is None
    assert sorted(storage.keys()) == ["a", "b", "d"]


def test_overwrite_counts_as_use_and_a_miss_does_not() -> None:
    storage = MemoryStorage(max_size_in_memory=3)
    for key in "abc":
        storage.set(key, key.encode(), None)
    storage.set("a", b"A", None)
    assert storage.get("zzz") is None
    storage.set("d", b"d", None)
    assert storage.keys() == ["c", "a", "d"]
    assert storage.get("a") == b"A"


# ----- bounds ------------------------------------------------------------------------------------


def test_entry_bound() -> None:
    storage = MemoryStorage(max_size_in_memory=10)
    for i in range(100):
        storage.set(f"key-{i}", b"v", None)
        assert len(storage) == min(i + 1, 10)
    assert storage.keys() == [f"key-{i}" for i in range(90, 100)]


def test_byte_bound_evicts_lru_until_it_holds() -> None:
    value = b"x" * 98
    per_entry = cost("k0", value)  # 300
    storage = MemoryStorage(max_memory_bytes=3 * per_entry)
    for i in range(3):
        storage.set(f"k{i}", value, None)
    assert len(storage) == 3
    assert storage.size_bytes == 3 * per_entry
    storage.get("k0")
    storage.set("k3", value, None)
    assert storage.keys() == ["k2", "k0", "k3"]
    assert storage.size_bytes == 3 * per_entry
    # one entry worth two slots pushes out the two least recently used
    big = b"y" * (per_entry + 98)
    storage.set("k4", big, None)
    assert storage.keys() == ["k3", "k4"]
    assert storage.size_bytes == charged(storage) <= storage.max_bytes


def test_size_bytes_accounting_returns_to_zero() -> None:
    storage = MemoryStorage(max_memory_bytes=10_000)
    assert storage.size_bytes == 0
    storage.set("a", b"1" * 50, None)
    storage.set("bb", b"2" * 70, None)
    assert storage.size_bytes == cost("a", b"1" * 50) + cost("bb", b"2" * 70)
    storage.set("a", b"1" * 10, None)  # overwrite with a smaller value
    assert storage.size_bytes == cost("a", b"1" * 10) + cost("bb", b"2" * 70)
    storage.delete("a")
    storage.delete("missing")
    assert storage.size_bytes == cost("bb", b"2" * 70)
    storage.delete("bb")
    assert storage.size_bytes == 0 and len(storage) == 0
    storage.set_many([(f"k{i}", b"z" * i) for i in range(20)], None)
    assert storage.size_bytes == charged(storage) > 0
    storage.clear()
    assert storage.size_bytes == 0 and len(storage) == 0 and storage.keys() == []


def test_entry_larger_than_byte_bound_is_not_stored() -> None:
    storage = MemoryStorage(max_memory_bytes=1_000)
    storage.set("small", b"s", None)
    storage.set("huge", b"h" * 1_000, None)
    assert storage.get("huge") is None
    assert storage.get("small") == b"s"  # and it did not flush the rest of the cache
    assert storage.size_bytes == cost("small", b"s")
    # exactly at the bound is fine
    fits = b"f" * (1_000 - ENTRY_OVERHEAD - len("fits"))
    storage.set("fits", fits, None)
    assert storage.get("fits") == fits
    assert storage.keys() == ["fits"]


def test_oversized_overwrite_drops_the_old_value() -> None:
    storage = MemoryStorage(max_memory_bytes=1_000)
    storage.set("key", b"old answer", None)
    storage.set("key", b"n" * 5_000, None)
    assert storage.get("key") is None  # never the stale old value
    assert storage.size_bytes == 0


@pytest.mark.parametrize("name", ["max_size_in_memory", "max_memory_bytes"])
@pytest.mark.parametrize("bad", [0, -1, 1.5, "10", True, None])
def test_bad_bounds_raise(name: str, bad: Any) -> None:
    with pytest.raises(ConfigurationError, match=name):
        MemoryStorage(**{name: bad})
    if bad is not None:  # None means "the default" at the Cache level
        with pytest.raises(ConfigurationError, match=name):
            Cache(type="local", **{name: bad})


def test_cache_passes_bounds_to_the_storage() -> None:
    cache = Cache(type="local", max_size_in_memory=7, max_memory_bytes=12_345)
    assert isinstance(cache.storage, MemoryStorage)
    assert (cache.storage.max_entries, cache.storage.max_bytes) == (7, 12_345)


# ----- TTL -------------------------------------------------------------------------------------


def test_ttl_uses_the_injected_clock(clock: Any) -> None:
    storage = MemoryStorage(clock=clock)
    storage.set("short", b"s", 10)
    storage.set("forever", b"f", None)
    clock.advance(9.5)
    assert storage.get("short") == b"s"
    clock.advance(0.5)  # exactly at expiry: gone
    assert storage.get("short") is None
    assert storage.keys() == ["forever"]  # the expired entry was removed on read
    assert storage.size_bytes == cost("forever", b"f")
    clock.advance(10**9)
    assert storage.get("forever") == b"f"


def test_ttl_zero_is_never_served(clock: Any) -> None:
    storage = MemoryStorage(clock=clock)
    storage.set("k", b"v", 0)
    assert storage.get("k") is None


def test_overwrite_resets_ttl(clock: Any) -> None:
    storage = MemoryStorage(clock=clock)
    storage.set("k", b"v1", 10)
    clock.advance(8)
    storage.set("k", b"v2", 10)
    clock.advance(8)
    assert storage.get("k") == b"v2"
    storage.set("k", b"v3", None)
    clock.advance(100)
    assert storage.get("k") == b"v3"


# ----- max_item_bytes at the Cache level ---------------------------------------------------------


def test_max_item_bytes_skips_oversized_answers(upstream: Any) -> None:
    llmstash.cache = Cache(max_item_bytes=1_500)
    small = dict(model="openai/demo", messages=[{"role": "user", "content": "short question"}], api_base=upstream.base_url)
    # the mock upstream echoes the first 8 words of the prompt, so this answer is > 1,500 bytes
    big_prompt = " ".join(f"{i}" * 250 for i in range(8))
    big = dict(model="openai/demo", messages=[{"role": "user", "content": big_prompt}], api_base=upstream.base_url)

    completion(**big)
    assert llmstash.cache.stats()["oversized"] == 1
    assert completion(**big)._hidden_params["cache_hit"] is False
    assert upstream.call_count("chat/completions") == 2
    assert llmstash.cache.stats()["oversized"] == 2
    assert len(llmstash.cache.storage) == 0  # type: ignore[arg-type]

    first = completion(**small)
    second = completion(**small)
    assert second._hidden_params["cache_hit"] is True and second.id == first.id
    assert upstream.call_count("chat/completions") == 3
    stats = llmstash.cache.stats()
    assert (stats["oversized"], stats["writes"], stats["errors"]) == (2, 1, 0)


def test_max_item_bytes_applies_to_add_cache() -> None:
    cache = Cache(max_item_bytes=200)
    cache.add_cache("x" * 500, cache_key="big")
    cache.add_cache("x" * 10, cache_key="small")
    assert cache.get_cache(cache_key="big") is None
    assert cache.get_cache(cache_key="small") == "x" * 10
    assert cache.stats()["oversized"] == 1


# ----- threads ------------------------------------------------------------------------------------


def test_threads_share_one_storage_safely(clock: Any) -> None:
    max_entries, max_bytes = 64, 16_384
    storage = MemoryStorage(max_size_in_memory=max_entries, max_memory_bytes=max_bytes, clock=clock)
    threads_n, ops_n = 8, 2_000
    errors: list[BaseException] = []
    wrong_values: list[tuple[str, bytes]] = []
    barrier = threading.Barrier(threads_n)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            barrier.wait()
            for _ in range(ops_n):
                key = f"key-{rng.randrange(200)}"
                op = rng.random()
                if op < 0.45:
                    value = key.encode() + b"|" + rng.randbytes(rng.randrange(400))
                    storage.set(key, value, rng.choice([None, 5.0]))
                elif op < 0.85:
                    got = storage.get(key)
                    if got is not None and not got.startswith(key.encode() + b"|"):
                        wrong_values.append((key, got[:40]))
                elif op < 0.95:
                    storage.delete(key)
                else:
                    keys = [f"key-{rng.randrange(200)}" for _ in range(4)]
                    for k, got in zip(keys, storage.get_many(keys), strict=True):
                        if got is not None and not got.startswith(k.encode() + b"|"):
                            wrong_values.append((k, got[:40]))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # force frequent thread switches
    try:
        threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(threads_n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(old_interval)

    assert errors == []
    assert wrong_values == []
    assert len(storage) <= max_entries
    assert storage.size_bytes <= max_bytes
    assert storage.size_bytes == charged(storage)
    assert len(set(storage.keys())) == len(storage)
    storage.clear()
    assert storage.size_bytes == 0
