"""One conformance suite for every storage backend, and the same checks at the Cache level.

To add a backend, add a factory to ``STORAGE_FACTORIES`` (a raw ``Storage``) and to
``CACHE_FACTORIES`` (a ``Cache`` of that type); every test below then runs against it. A factory
gets the pytest ``request`` and asks it for the fixtures it needs (the Redis ones ask for a clean
real server), so a local or disk run starts no server.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import llmstash
from llmstash import acompletion, completion
from llmstash.backends.azure_blob import AzureBlobStorage
from llmstash.backends.base import Storage
from llmstash.backends.disk import DiskStorage
from llmstash.backends.gcs import GCSStorage
from llmstash.backends.memory import MemoryStorage
from llmstash.backends.redis import RedisStorage
from llmstash.backends.s3 import S3Storage
from llmstash.caching import Cache

# ----- factories: type name -> how to build it ------------------------------------------------

StorageFactory = Callable[[pytest.FixtureRequest, Path, Callable[[], float]], Storage]
CacheFactory = Callable[..., Cache]  # (request, tmp_path, **cache_kwargs) -> Cache


def _redis_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue("redis_url")  # a clean standalone server
    return url


def _cluster_nodes(request: pytest.FixtureRequest) -> list[dict[str, object]]:
    nodes: list[dict[str, object]] = request.getfixturevalue("cluster_nodes")  # a clean 3-node cluster
    return nodes


def _options(request: pytest.FixtureRequest, fixture: str) -> dict[str, Any]:
    options: dict[str, Any] = request.getfixturevalue(fixture)  # a new, empty bucket on a real emulator
    return options


STORAGE_FACTORIES: dict[str, StorageFactory] = {
    "local": lambda request, tmp_path, clock: MemoryStorage(clock=clock),
    "disk": lambda request, tmp_path, clock: DiskStorage(disk_cache_dir=tmp_path / "disk-storage"),
    "redis": lambda request, tmp_path, clock: RedisStorage(url=_redis_url(request), clock=clock),
    "redis-cluster": lambda request, tmp_path, clock: RedisStorage(redis_startup_nodes=_cluster_nodes(request), clock=clock),
    "s3": lambda request, tmp_path, clock: S3Storage(**_options(request, "s3_options"), clock=clock),
    "gcs": lambda request, tmp_path, clock: GCSStorage(**_options(request, "gcs_options"), clock=clock),
    "azure-blob": lambda request, tmp_path, clock: AzureBlobStorage(**_options(request, "azure_options"), clock=clock),
}

CACHE_FACTORIES: dict[str, CacheFactory] = {
    "local": lambda request, tmp_path, **kwargs: Cache(type="local", **kwargs),
    "disk": lambda request, tmp_path, **kwargs: Cache(type="disk", disk_cache_dir=str(tmp_path / "disk-cache"), **kwargs),
    "redis": lambda request, tmp_path, **kwargs: Cache(type="redis", url=_redis_url(request), **kwargs),
    "redis-cluster": lambda request, tmp_path, **kwargs: Cache(
        type="redis", redis_startup_nodes=_cluster_nodes(request), **kwargs
    ),
    "s3": lambda request, tmp_path, **kwargs: Cache(type="s3", **_options(request, "s3_options"), **kwargs),
    "gcs": lambda request, tmp_path, **kwargs: Cache(type="gcs", **_options(request, "gcs_options"), **kwargs),
    "azure-blob": lambda request, tmp_path, **kwargs: Cache(type="azure-blob", **_options(request, "azure_options"), **kwargs),
}


@pytest.fixture(params=list(STORAGE_FACTORIES))
def storage(request: pytest.FixtureRequest, tmp_path: Path, clock: Any) -> Iterator[Storage]:
    backend = STORAGE_FACTORIES[request.param](request, tmp_path, clock)
    yield backend
    backend.close()


@pytest.fixture(params=list(CACHE_FACTORIES))
def make_cache(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Cache]]:
    made: list[Cache] = []

    def make(**kwargs: Any) -> Cache:
        cache = CACHE_FACTORIES[request.param](request, tmp_path, **kwargs)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        cache.close()


ODD_KEYS = [
    "plain",
    "with spaces in it",
    "prod:tenant-a:0123abcd",
    "::::",
    "unicodé-ключ-鍵-🔑",
    "tab\tnewline\nreturn\r",
    "slash/back\\slash?query=1&x#frag",
    "'quotes\" and `ticks` ; DROP TABLE Cache; --",
    "%s %d {} {0}",
    "k" * 1000,
    "é" * 1000,
]


# ----- storage protocol ----------------------------------------------------------------------


def test_get_of_missing_key_is_none(storage: Storage) -> None:
    assert storage.get("never-written") is None


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"x",
        b'LS\x01["chat",1,null,{}]',
        bytes(range(256)),
        b"\x00" * 17 + b"middle\x00nul" + b"\x00",
        os.urandom(1024 * 1024),
    ],
    ids=["empty", "one-byte", "envelope-like", "all-byte-values", "nul-bytes", "1MB"],
)
def test_set_get_roundtrip(storage: Storage, value: bytes) -> None:
    storage.set("key", value, None)
    got = storage.get("key")
    assert type(got) is bytes
    assert got == value


def test_set_with_ttl_is_readable_before_expiry(storage: Storage) -> None:
    storage.set("key", b"value", 3600)
    assert storage.get("key") == b"value"


def test_overwrite_replaces(storage: Storage) -> None:
    storage.set("key", b"first" * 100, None)
    storage.set("key", b"second", None)
    assert storage.get("key") == b"second"
    storage.set("key", b"", None)
    assert storage.get("key") == b""


def test_delete(storage: Storage) -> None:
    storage.set("a", b"1", None)
    storage.set("b", b"2", None)
    storage.delete("a")
    assert storage.get("a") is None
    assert storage.get("b") == b"2"


def test_delete_of_missing_key_is_fine(storage: Storage) -> None:
    storage.delete("never-written")
    storage.set("a", b"1", None)
    storage.delete("a")
    storage.delete("a")
    assert storage.get("a") is None


def test_clear(storage: Storage) -> None:
    for i in range(20):
        storage.set(f"key-{i}", b"v%d" % i, None)
    storage.clear()
    assert all(storage.get(f"key-{i}") is None for i in range(20))
    storage.set("after", b"ok", None)  # usable after a clear
    assert storage.get("after") == b"ok"


def test_get_many_preserves_order_and_reports_missing(storage: Storage) -> None:
    storage.set("a", b"A", None)
    storage.set("c", b"C", None)
    assert storage.get_many(["c", "missing", "a", "a", "other-missing"]) == [b"C", None, b"A", b"A", None]
    assert storage.get_many([]) == []


def test_set_many_then_get_many(storage: Storage) -> None:
    items = [(f"key-{i}", f"value-{i}".encode()) for i in range(10)]
    storage.set_many(items, None)
    keys = [key for key, _ in reversed(items)]
    assert storage.get_many(keys) == [value for _, value in reversed(items)]
    assert [storage.get(key) for key, _ in items] == [value for _, value in items]


def test_set_many_later_item_wins_for_repeated_key(storage: Storage) -> None:
    storage.set_many([("k", b"old"), ("other", b"o"), ("k", b"new")], None)
    assert storage.get_many(["k", "other"]) == [b"new", b"o"]


def test_async_twins_agree_with_sync(storage: Storage) -> None:
    async def scenario() -> None:
        assert await storage.aget("a") is None
        await storage.aset("a", b"from-async", None)
        assert storage.get("a") == b"from-async"
        storage.set("b", b"from-sync", None)
        assert await storage.aget("b") == b"from-sync"
        assert (
            await storage.aget_many(["b", "missing", "a"])
            == storage.get_many(["b", "missing", "a"])
            == [
                b"from-sync",
                None,
                b"from-async",
            ]
        )
        await storage.aset_many([("c", b"C"), ("d", b"")], None)
        assert storage.get_many(["d", "c"]) == [b"", b"C"]
        await storage.adelete("a")
        await storage.adelete("never-written")
        assert storage.get("a") is None
        assert await storage.aget("a") is None
        assert await storage.aget_many([]) == []

    asyncio.run(scenario())


@pytest.mark.parametrize("key", ODD_KEYS, ids=range(len(ODD_KEYS)))
def test_odd_keys(storage: Storage, key: str) -> None:
    value = b"value-for:" + key.encode()
    storage.set(key, value, None)
    assert storage.get(key) == value
    # no aliasing with a prefix or a near neighbour of the key
    assert storage.get(key[:-1]) is None
    assert storage.get(key + " ") is None
    assert storage.get_many([key, key.upper() if key.upper() != key else key + "x"]) == [value, None]
    storage.delete(key)
    assert storage.get(key) is None


def test_odd_keys_are_all_distinct(storage: Storage) -> None:
    storage.set_many([(key, f"v{i}".encode()) for i, key in enumerate(ODD_KEYS)], None)
    assert storage.get_many(ODD_KEYS) == [f"v{i}".encode() for i in range(len(ODD_KEYS))]


# ----- the same backends behind a Cache --------------------------------------------------------

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def test_completion_hit(make_cache: Callable[..., Cache], upstream: Any) -> None:
    llmstash.cache = make_cache()
    first = completion(model="openai/demo", messages=MESSAGES, api_base=upstream.base_url)
    second = completion(model="openai/demo", messages=MESSAGES, api_base=upstream.base_url)
    assert first._hidden_params["cache_hit"] is False
    assert second._hidden_params["cache_hit"] is True
    assert second.id == first.id
    assert second.model_dump() == first.model_dump()
    assert upstream.call_count("chat/completions") == 1
    stats = llmstash.cache.stats()
    assert (stats["hits"], stats["misses"], stats["writes"], stats["errors"]) == (1, 1, 1, 0)


def test_acompletion_hit_after_sync_miss(make_cache: Callable[..., Cache], upstream: Any) -> None:
    llmstash.cache = make_cache()
    first = completion(model="openai/demo", messages=MESSAGES, api_base=upstream.base_url)
    second = asyncio.run(acompletion(model="openai/demo", messages=MESSAGES, api_base=upstream.base_url))
    assert second._hidden_params["cache_hit"] is True
    assert second.id == first.id
    assert upstream.call_count("chat/completions") == 1


def test_ttl_expiry(make_cache: Callable[..., Cache], upstream: Any, clock: Any) -> None:
    llmstash.cache = make_cache(clock=clock, ttl=10)
    first = completion(model="openai/demo", messages=MESSAGES, api_base=upstream.base_url)
    clock.advance(9)
    assert completion(model="openai/demo", messages=MESSAGES, api_base=upstream.base_url)._hidden_params["cache_hit"] is True
    clock.advance(2)  # 11 s after the write
    third = completion(model="openai/demo", messages=MESSAGES, api_base=upstream.base_url)
    assert third._hidden_params["cache_hit"] is False
    assert third.id != first.id
    assert upstream.call_count("chat/completions") == 2
    # the fresh answer is cached again, with a fresh TTL
    fourth = completion(model="openai/demo", messages=MESSAGES, api_base=upstream.base_url)
    assert fourth._hidden_params["cache_hit"] is True and fourth.id == third.id
    assert upstream.call_count("chat/completions") == 2


def test_namespace_isolation(make_cache: Callable[..., Cache], upstream: Any) -> None:
    tenant_a = make_cache(namespace="tenant-a")
    tenant_b = make_cache(namespace="tenant-b")
    tenant_b.storage = tenant_a.storage  # one shared backend: only the namespace separates them
    kwargs = dict(model="openai/demo", messages=MESSAGES, api_base=upstream.base_url)

    llmstash.cache = tenant_a
    a1 = completion(**kwargs)
    llmstash.cache = tenant_b
    b1 = completion(**kwargs)
    assert b1._hidden_params["cache_hit"] is False and b1.id != a1.id
    assert upstream.call_count("chat/completions") == 2

    llmstash.cache = tenant_a
    a2 = completion(**kwargs)
    llmstash.cache = tenant_b
    b2 = completion(**kwargs)
    assert (a2.id, b2.id) == (a1.id, b1.id)
    assert a2._hidden_params["cache_hit"] and b2._hidden_params["cache_hit"]
    assert upstream.call_count("chat/completions") == 2

    # a per-call namespace nests inside the cache's namespace and is isolated too
    c1 = completion(**kwargs, cache={"namespace": "project-x"})
    assert c1._hidden_params["cache_hit"] is False
    assert c1._hidden_params["cache_key"].startswith("tenant-b:project-x:")
    c2 = completion(**kwargs, cache={"namespace": "project-x"})
    assert c2._hidden_params["cache_hit"] is True and c2.id == c1.id
    assert upstream.call_count("chat/completions") == 3
    llmstash.cache = None


def test_no_namespace_and_namespace_do_not_share(make_cache: Callable[..., Cache], upstream: Any) -> None:
    plain = make_cache()
    spaced = make_cache(namespace="prod")
    spaced.storage = plain.storage
    kwargs = dict(model="openai/demo", messages=MESSAGES, api_base=upstream.base_url)
    llmstash.cache = plain
    completion(**kwargs)
    llmstash.cache = spaced
    assert completion(**kwargs)._hidden_params["cache_hit"] is False
    assert upstream.call_count("chat/completions") == 2


def test_direct_add_get_delete(make_cache: Callable[..., Cache]) -> None:
    cache = make_cache()
    value = {"answer": [1, 2.5, "three", None, True], "nested": {"ключ": "值"}}
    cache.add_cache(value, cache_key="my key: with odd chars ✓")
    assert cache.get_cache(cache_key="my key: with odd chars ✓") == value
    assert cache.get_cache(cache_key="other") is None
    cache.delete_cache("my key: with odd chars ✓")
    assert cache.get_cache(cache_key="my key: with odd chars ✓") is None
