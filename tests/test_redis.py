"""The Redis / Redis Cluster backend against real valkey-server processes on 127.0.0.1.

The servers come from the session fixtures of ``conftest`` (standalone, password-protected and a
3-node cluster) or, for the tests that kill or stop a server, from a server of the test's own.
Other processes are real ``sys.executable -c`` children sharing the server and the upstream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import llmstash
import llmstash as litellm
from llmstash import acompletion, aembedding, completion, embedding
from llmstash.caching import Cache
from llmstash.testing import MockUpstream
from llmstash.testing.servers import ValkeyCluster, ValkeyServer, free_port

PASSWORD = "s3cret-pass"
JOKE = [{"role": "user", "content": "Tell me a joke."}]
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
CHILD_TIMEOUT = 30


def ask(upstream: MockUpstream, content: str = "What is the capital of France?", **kwargs: Any) -> Any:
    return completion(model="openai/demo", messages=[{"role": "user", "content": content}], api_base=upstream.base_url, **kwargs)


def assert_same_answer(hit: Any, miss: Any) -> None:
    assert miss._hidden_params["cache_hit"] is False
    assert hit._hidden_params["cache_hit"] is True
    assert hit.id == miss.id
    assert hit.model_dump() == miss.model_dump()


def entry_keys(client: Any) -> set[str]:
    return {key.decode() for key in client.keys("llmstash:*")}


# ----- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def server(redis_server: ValkeyServer, redis_url: str) -> ValkeyServer:
    """The session's standalone server, flushed for this test."""
    return redis_server


@pytest.fixture
def auth_server(redis_password_server: ValkeyServer) -> ValkeyServer:
    """The session's password-protected server, flushed for this test."""
    redis_password_server.flush()
    return redis_password_server


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ValkeyServer]:
    """A server of this test's own, to kill, pause and restart."""
    own = ValkeyServer(tmp_path).start()
    yield own
    own.stop()


@pytest.fixture(params=["redis", "redis-cluster"])
def where(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Cache(...) options for a clean standalone server or a clean cluster, a raw client, and
    ``keys()``: llmstash's entry keys on the server (on every node of the cluster)."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        raw = redis.Redis.from_url(url)
        yield {"options": {"url": url}, "raw": raw, "keys": lambda: entry_keys(raw)}
        raw.close()
        return
    nodes = request.getfixturevalue("cluster_nodes")
    cluster: ValkeyCluster = request.getfixturevalue("redis_cluster")
    raw_cluster = redis.cluster.RedisCluster(startup_nodes=[redis.cluster.ClusterNode(n["host"], n["port"]) for n in nodes])

    def every_node_keys() -> set[str]:  # KEYS on a cluster client asks one node only
        return set().union(*(entry_keys(node.client()) for node in cluster.nodes))

    yield {"options": {"redis_startup_nodes": nodes}, "raw": raw_cluster, "keys": every_node_keys}
    raw_cluster.close()


def child_env() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("REDIS_")}
    env["NO_PROXY"] = "127.0.0.1,localhost"
    return env


def run_child(script: str, *args: str) -> Any:
    """Run ``script`` in a new interpreter; its last line of output, parsed as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        env=child_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----- the seed's Redis examples, on the password-protected server -----------------------------


def test_seed_redis_quick_start(auth_server: ValkeyServer, upstream: MockUpstream) -> None:
    litellm.cache = Cache(type="redis", host="127.0.0.1", port=auth_server.port, password=PASSWORD)

    # Make completion calls
    response1 = completion(model="gpt-3.5-turbo", messages=JOKE, caching=True, api_base=upstream.base_url)
    response2 = completion(model="gpt-3.5-turbo", messages=JOKE, caching=True, api_base=upstream.base_url)

    # response1 == response2, response 1 is cached
    assert_same_answer(response2, response1)
    assert response2 == response1
    assert upstream.call_count("chat/completions") == 1
    raw = auth_server.client()
    assert entry_keys(raw) == {"llmstash:" + response1._hidden_params["cache_key"]}
    assert raw.keys("llmstash-lock:*") == []  # the single-flight lock was released
    assert raw.pttl("llmstash:" + response1._hidden_params["cache_key"]) == -1  # no TTL unless configured


# fmt: off
# this function takes in *args, **kwargs and returns the key you want to use for caching
def custom_get_cache_key(*args, **kwargs):  # type: ignore[no-untyped-def]
    # return key to use for your cache:
    key = kwargs.get("model", "") + str(kwargs.get("messages", "")) + str(kwargs.get("temperature", "")) + str(kwargs.get("logit_bias", ""))
    print("key for cache", key)
    return key
# fmt: on


def test_seed_custom_cache_key_with_redis(
    auth_server: ValkeyServer, upstream: MockUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_HOST", "127.0.0.1")
    monkeypatch.setenv("REDIS_PORT", str(auth_server.port))
    monkeypatch.setenv("REDIS_PASSWORD", PASSWORD)

    cache = Cache(
        type="redis", host=os.environ["REDIS_HOST"], port=os.environ["REDIS_PORT"], password=os.environ["REDIS_PASSWORD"]
    )
    cache.get_cache_key = custom_get_cache_key  # set get_cache_key function for your cache
    litellm.cache = cache  # set litellm.cache to your cache

    response1 = completion(model="gpt-3.5-turbo", messages=JOKE, temperature=0.7, api_base=upstream.base_url)
    expected_key = "gpt-3.5-turbo" + str(JOKE) + "0.7"
    assert response1._hidden_params["cache_key"] == expected_key
    response2 = completion(model="gpt-3.5-turbo", messages=JOKE, temperature=0.7, api_base=upstream.base_url)
    assert_same_answer(response2, response1)
    assert upstream.call_count("chat/completions") == 1
    # stored in Redis under exactly the custom key, behind llmstash's prefix
    assert entry_keys(auth_server.client()) == {"llmstash:" + expected_key}

    colder = completion(model="gpt-3.5-turbo", messages=JOKE, temperature=0.1, api_base=upstream.base_url)
    assert colder._hidden_params["cache_hit"] is False
    assert upstream.call_count("chat/completions") == 2


def test_seed_custom_key_value_pairs_with_redis(auth_server: ValkeyServer) -> None:
    cache = Cache(type="redis", host="127.0.0.1", port=auth_server.port, password=PASSWORD)
    cache.add_cache(cache_key="test-key", result="1234")
    assert cache.get_cache(cache_key="test-key") == "1234"
    assert auth_server.client().exists("llmstash:test-key") == 1
    # a fresh Cache object (as another process would) reads the same entry
    other = Cache(type="redis", host="127.0.0.1", port=auth_server.port, password=PASSWORD)
    assert other.get_cache(cache_key="test-key") == "1234"
    cache.close()
    other.close()


def test_seed_logging_example_with_redis(
    auth_server: ValkeyServer, upstream: MockUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmstash.integrations.custom_logger import CustomLogger

    monkeypatch.setenv("REDIS_HOST", "127.0.0.1")
    monkeypatch.setenv("REDIS_PORT", str(auth_server.port))
    monkeypatch.setenv("REDIS_PASSWORD", PASSWORD)

    # create custom callback for success_events
    class MyCustomHandler(CustomLogger):
        def __init__(self) -> None:
            self.states: list[bool] = []

        async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):  # type: ignore[no-untyped-def]
            self.states.append(kwargs["cache_hit"])

    async def test_async_completion_azure_caching() -> tuple[MyCustomHandler, Any, Any]:
        # set custom callback
        customHandler_caching = MyCustomHandler()
        litellm.callbacks = [customHandler_caching]

        # init cache
        litellm.cache = Cache(
            type="redis", host=os.environ["REDIS_HOST"], port=os.environ["REDIS_PORT"], password=os.environ["REDIS_PASSWORD"]
        )
        unique_time = time.time()
        messages = [{"role": "user", "content": f"Hi 👋 - i'm async azure {unique_time}"}]
        azure = dict(api_base=upstream.azure_base, api_key="azure-test-key")
        response1 = await litellm.acompletion(model="azure/chatgpt-v-2", messages=messages, caching=True, **azure)
        response2 = await litellm.acompletion(model="azure/chatgpt-v-2", messages=messages, caching=True, **azure)
        return customHandler_caching, response1, response2

    handler, response1, response2 = asyncio.run(test_async_completion_azure_caching())
    assert handler.states == [False, True]
    assert_same_answer(response2, response1)
    assert upstream.call_count("chat/completions") == 1
    assert len(entry_keys(auth_server.client())) == 1


# ----- configuration: url, environment, redis-py keywords ---------------------------------------


def test_url_parameter(auth_server: ValkeyServer, upstream: MockUpstream) -> None:
    assert auth_server.url.startswith("redis://:s3cret-pass@127.0.0.1:")
    llmstash.cache = Cache(type="redis", url=auth_server.url)
    first = ask(upstream)
    second = ask(upstream)
    assert_same_answer(second, first)
    assert entry_keys(auth_server.client()) == {"llmstash:" + first._hidden_params["cache_key"]}
    assert PASSWORD not in repr(llmstash.cache.storage)


def test_host_port_password_from_environment(
    auth_server: ValkeyServer, upstream: MockUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_HOST", "127.0.0.1")
    monkeypatch.setenv("REDIS_PORT", str(auth_server.port))
    monkeypatch.setenv("REDIS_PASSWORD", PASSWORD)
    llmstash.cache = Cache(type="redis")
    first = ask(upstream)
    second = ask(upstream)
    assert_same_answer(second, first)
    assert llmstash.cache.stats()["errors"] == 0
    assert len(entry_keys(auth_server.client())) == 1


def test_redis_url_from_environment(
    auth_server: ValkeyServer, server: ValkeyServer, upstream: MockUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", auth_server.url)
    llmstash.cache = Cache(type="redis")
    first = ask(upstream)
    assert_same_answer(ask(upstream), first)
    assert len(entry_keys(auth_server.client())) == 1
    assert entry_keys(server.client()) == set()

    # an explicit host/port wins over REDIS_URL
    llmstash.cache.close()
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    llmstash.cache = Cache(type="redis", host="127.0.0.1", port=server.port)
    other = ask(upstream, "another question")
    assert_same_answer(ask(upstream, "another question"), other)
    assert llmstash.cache.stats()["errors"] == 0
    assert len(entry_keys(server.client())) == 1


def test_redis_client_keyword_is_passed_through(server: ValkeyServer, upstream: MockUpstream) -> None:
    cache = Cache(type="redis", url=server.url, health_check_interval=30, client_name="llmstash-tests")
    llmstash.cache = cache
    first = ask(upstream)
    assert_same_answer(ask(upstream), first)
    assert cache.storage.client().connection_pool.connection_kwargs["health_check_interval"] == 30  # type: ignore[attr-defined]
    names = [client["name"] for client in server.client().client_list()]
    assert "llmstash-tests" in names


@pytest.mark.parametrize("name", ["not_a_redis_option", "pasword"])
def test_unknown_keyword_is_a_configuration_error(server: ValkeyServer, name: str) -> None:
    with pytest.raises(llmstash.ConfigurationError, match=repr(name)):
        Cache(type="redis", url=server.url, **{name: "x"})


@pytest.mark.parametrize(
    "nodes",
    [
        [("127.0.0.1", 7000)],
        "127.0.0.1:7000",
        {"host": "127.0.0.1", "port": 7000},
        [{"host": "127.0.0.1"}],
        [{"port": 7000}],
        [{"host": "127.0.0.1", "port": "not-a-port"}],
        [None],
        [],
        7000,
    ],
    ids=["tuples", "string", "dict", "no-port", "no-host", "bad-port", "none-item", "empty", "int"],
)
def test_bad_startup_nodes_are_a_configuration_error(nodes: Any) -> None:
    with pytest.raises(llmstash.ConfigurationError, match="redis_startup_nodes"):
        Cache(type="redis", redis_startup_nodes=nodes)


@pytest.mark.parametrize(
    "options",
    [
        {"url": "http://127.0.0.1:6379"},
        {"redis_flush_size": 0},
        {"redis_flush_size": -5},
        {"redis_flush_size": True},
        {"redis_flush_size": "100"},
        {"redis_flush_size": 2.5},
    ],
    ids=["http-url", "flush-0", "flush-negative", "flush-bool", "flush-str", "flush-float"],
)
def test_bad_redis_options_are_a_configuration_error(options: dict[str, Any]) -> None:
    with pytest.raises(llmstash.ConfigurationError):
        Cache(type="redis", **options)


# ----- sharing across processes and namespaces ------------------------------------------------

CHILD_ASK = """
import json, sys
import llmstash
from llmstash.caching import Cache
llmstash.cache = Cache(type="redis", url=sys.argv[1])
answer = llmstash.completion(model="openai/demo", messages=[{"role": "user", "content": sys.argv[3]}], api_base=sys.argv[2])
stats = llmstash.cache.stats()
llmstash.cache.close()
print(json.dumps({"id": answer.id, "cache_hit": answer._hidden_params["cache_hit"], "stats": stats}))
"""


def test_hit_across_two_processes(server: ValkeyServer, upstream: MockUpstream) -> None:
    llmstash.cache = Cache(type="redis", url=server.url)
    first = ask(upstream, "shared between processes")
    assert first._hidden_params["cache_hit"] is False

    child = run_child(CHILD_ASK, server.url, upstream.base_url, "shared between processes")
    assert child["cache_hit"] is True
    assert child["id"] == first.id
    assert (child["stats"]["hits"], child["stats"]["errors"]) == (1, 0)
    assert upstream.call_count("chat/completions") == 1

    # and the other way round: a child's answer is a hit here
    child = run_child(CHILD_ASK, server.url, upstream.base_url, "asked by the child first")
    assert child["cache_hit"] is False
    here = ask(upstream, "asked by the child first")
    assert here._hidden_params["cache_hit"] is True and here.id == child["id"]
    assert upstream.call_count("chat/completions") == 2


def test_namespace_isolation(server: ValkeyServer, upstream: MockUpstream) -> None:
    tenant_a = Cache(type="redis", url=server.url, namespace="tenant-a")
    tenant_b = Cache(type="redis", url=server.url, namespace="tenant-b")
    plain = Cache(type="redis", url=server.url)
    answers = {}
    for name, cache in (("a", tenant_a), ("b", tenant_b), ("plain", plain)):
        llmstash.cache = cache
        answers[name] = ask(upstream)
        assert answers[name]._hidden_params["cache_hit"] is False
    assert len({answer.id for answer in answers.values()}) == 3
    assert upstream.call_count("chat/completions") == 3

    keys = entry_keys(server.client())
    assert len(keys) == 3
    assert sum(key.startswith("llmstash:tenant-a:") for key in keys) == 1
    assert sum(key.startswith("llmstash:tenant-b:") for key in keys) == 1

    # each namespace reads its own entry back, also through a new Cache object
    llmstash.cache = Cache(type="redis", url=server.url, namespace="tenant-a")
    assert_same_answer(ask(upstream), answers["a"])
    llmstash.cache.close()
    llmstash.cache = tenant_b
    assert_same_answer(ask(upstream), answers["b"])
    assert upstream.call_count("chat/completions") == 3
    for cache in (tenant_a, tenant_b, plain):
        cache.close()


# ----- TTL -------------------------------------------------------------------------------------


def test_no_ttl_unless_configured(server: ValkeyServer, upstream: MockUpstream) -> None:
    cache = Cache(type="redis", url=server.url)
    llmstash.cache = cache
    key = ask(upstream)._hidden_params["cache_key"]
    raw = server.client()
    assert raw.pttl("llmstash:" + key) == -1
    embedding(model="openai/text-embedding-3-small", input=["one", "two", "three"], api_base=upstream.base_url)
    cache.add_cache("1234", cache_key="test-key")
    assert len(entry_keys(raw)) == 5
    assert {raw.pttl(name) for name in entry_keys(raw)} == {-1}


@pytest.mark.parametrize(
    ("cache_options", "call_options", "seconds"),
    [
        ({"ttl": 60}, {}, 60),
        ({"default_in_redis_ttl": 120}, {}, 120),
        ({}, {"cache": {"ttl": 30}}, 30),
        ({"ttl": 600}, {"cache": {"ttl": 30}}, 30),
        ({"default_in_redis_ttl": 600}, {"cache": {"ttl": 45}}, 45),
    ],
    ids=["ttl", "default_in_redis_ttl", "per-call", "per-call-beats-ttl", "per-call-beats-default"],
)
def test_ttl_sets_pttl(
    server: ValkeyServer, upstream: MockUpstream, cache_options: dict[str, Any], call_options: dict[str, Any], seconds: int
) -> None:
    llmstash.cache = Cache(type="redis", url=server.url, **cache_options)
    key = ask(upstream, **call_options)._hidden_params["cache_key"]
    pttl = server.client().pttl("llmstash:" + key)
    assert (seconds - 5) * 1000 < pttl <= seconds * 1000


def test_ttl_applies_to_embedding_items_and_direct_entries(server: ValkeyServer, upstream: MockUpstream) -> None:
    cache = Cache(type="redis", url=server.url, ttl=90)
    llmstash.cache = cache
    embedding(model="openai/text-embedding-3-small", input=["one", "two", "three"], api_base=upstream.base_url)
    raw = server.client()
    item_keys = entry_keys(raw)
    assert len(item_keys) == 3
    assert all(85_000 < raw.pttl(name) <= 90_000 for name in item_keys)
    cache.add_cache("1234", cache_key="direct", ttl=20)
    assert 15_000 < raw.pttl("llmstash:direct") <= 20_000


def test_envelope_expiry_with_injected_clock_is_a_miss(server: ValkeyServer, upstream: MockUpstream, clock: Any) -> None:
    llmstash.cache = Cache(type="redis", url=server.url, ttl=10, clock=clock)
    first = ask(upstream)
    key = "llmstash:" + first._hidden_params["cache_key"]
    clock.advance(9)
    assert_same_answer(ask(upstream), first)
    clock.advance(2)  # 11 s after the write by the cache's clock; Redis itself has not expired it
    assert server.client().pttl(key) > 0
    third = ask(upstream)
    assert third._hidden_params["cache_hit"] is False and third.id != first.id
    assert upstream.call_count("chat/completions") == 2
    assert_same_answer(ask(upstream), third)  # the fresh answer is cached again


# ----- Redis Cluster ---------------------------------------------------------------------------


def test_cluster_embedding_batch_spans_slots(
    redis_cluster: ValkeyCluster, cluster_nodes: list[dict[str, object]], upstream: MockUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = Cache(type="redis", redis_startup_nodes=cluster_nodes)
    llmstash.cache = cache
    texts = [f"sentence number {i} for the cluster" for i in range(60)]
    model = "openai/text-embedding-3-small"
    first = embedding(model=model, input=texts, api_base=upstream.base_url)
    assert (first._hidden_params["cached_items"], first._hidden_params["cache_hit"]) == (0, False)
    assert upstream.call_count("embeddings") == 1

    per_node = [len(node.client().keys("llmstash:*")) for node in redis_cluster.nodes]
    assert sum(per_node) == 60
    assert sum(1 for count in per_node if count) >= 2, per_node

    batches: list[int] = []
    get_many = cache.storage.get_many

    def counting_get_many(keys: Any) -> Any:
        batches.append(len(keys))
        return get_many(keys)

    monkeypatch.setattr(cache.storage, "get_many", counting_get_many)
    second = embedding(model=model, input=texts, api_base=upstream.base_url)
    assert second._hidden_params["cache_hit"] is True
    assert second._hidden_params["cached_items"] == 60
    assert batches == [60]  # one batch read for the whole input
    assert second.model_dump()["data"] == first.model_dump()["data"]
    assert upstream.call_count("embeddings") == 1
    assert cache.stats()["errors"] == 0

    # a batch half old, half new sends only the new half upstream
    mixed = texts[30:] + [f"new sentence {i}" for i in range(30)]
    third = embedding(model=model, input=mixed, api_base=upstream.base_url)
    assert third._hidden_params["cached_items"] == 30
    assert upstream.calls[-1].body["input"] == mixed[30:]
    assert third.model_dump()["data"][:30] == [
        {**item, "index": position} for position, item in enumerate(first.model_dump()["data"][30:])
    ]


def test_cluster_completion_shared_between_cache_objects(cluster_nodes: list[dict[str, object]], upstream: MockUpstream) -> None:
    llmstash.cache = Cache(type="redis", redis_startup_nodes=cluster_nodes)
    answers = [ask(upstream, f"cluster question {i}") for i in range(12)]
    llmstash.cache.close()
    llmstash.cache = Cache(type="redis", redis_startup_nodes=cluster_nodes[1:])  # any node finds the cluster
    for i, first in enumerate(answers):
        assert_same_answer(ask(upstream, f"cluster question {i}"), first)
    assert upstream.call_count("chat/completions") == 12


# ----- write buffering: redis_flush_size --------------------------------------------------------


def test_buffered_writes_are_read_in_process_and_flushed_on_close(server: ValkeyServer, upstream: MockUpstream) -> None:
    cache = Cache(type="redis", url=server.url, redis_flush_size=100)
    llmstash.cache = cache
    raw = server.client()
    firsts = [ask(upstream, f"buffered {i}") for i in range(3)]
    assert entry_keys(raw) == set()  # nothing sent yet
    for i, first in enumerate(firsts):
        assert_same_answer(ask(upstream, f"buffered {i}"), first)  # read from this process's buffer
    assert upstream.call_count("chat/completions") == 3
    cache.close()
    assert len(entry_keys(raw)) == 3
    llmstash.cache = Cache(type="redis", url=server.url)
    for i, first in enumerate(firsts):
        assert_same_answer(ask(upstream, f"buffered {i}"), first)
    assert upstream.call_count("chat/completions") == 3


def test_buffer_is_sent_when_it_reaches_the_flush_size(server: ValkeyServer, upstream: MockUpstream) -> None:
    llmstash.cache = Cache(type="redis", url=server.url, redis_flush_size=5)
    raw = server.client()
    for i in range(4):
        ask(upstream, f"question {i}")
    assert entry_keys(raw) == set()
    ask(upstream, "question 4")
    assert len(entry_keys(raw)) == 5
    ask(upstream, "question 5")
    assert len(entry_keys(raw)) == 5


CHILD_WRITES = """
import json, sys
import llmstash
from llmstash.caching import Cache
llmstash.cache = Cache(type="redis", url=sys.argv[1], redis_flush_size=100)
ids = []
for i in range(250):
    messages = [{"role": "user", "content": f"exit test {i}"}]
    ids.append(llmstash.completion(model="openai/demo", messages=messages, api_base=sys.argv[2]).id)
print(json.dumps(ids))
# exits without close(): the last 50 writes are still in the buffer here
"""


def test_buffered_writes_are_not_lost_at_exit(server: ValkeyServer, upstream: MockUpstream) -> None:
    ids = run_child(CHILD_WRITES, server.url, upstream.base_url)
    assert len(set(ids)) == 250
    assert upstream.call_count("chat/completions") == 250
    assert len(entry_keys(server.client())) == 250
    llmstash.cache = Cache(type="redis", url=server.url)
    for i in range(250):
        answer = ask(upstream, f"exit test {i}")
        assert answer._hidden_params["cache_hit"] is True and answer.id == ids[i]
    assert upstream.call_count("chat/completions") == 250


# ----- flush_cache -----------------------------------------------------------------------------


def test_flush_cache_removes_only_llmstash_entries(where: dict[str, Any], upstream: MockUpstream) -> None:
    raw = where["raw"]
    foreign = ["foreign:key", "llmstash", "llmstashx:1", "other:llmstash:1", "LLMSTASH:upper"]
    for name in foreign:
        raw.set(name, b"keep me")
    cache = Cache(type="redis", **where["options"])
    llmstash.cache = cache
    firsts = [ask(upstream, f"flush {i}") for i in range(20)]
    assert len(where["keys"]()) == 20
    cache.flush_cache()
    assert where["keys"]() == set()
    assert [raw.get(name) for name in foreign] == [b"keep me"] * len(foreign)
    again = ask(upstream, "flush 0")
    assert again._hidden_params["cache_hit"] is False and again.id != firsts[0].id
    assert upstream.call_count("chat/completions") == 21


# ----- failures: wrong password, a killed server, a stopped server ----------------------------


def test_wrong_password_fails_open(auth_server: ValkeyServer, upstream: MockUpstream, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="llmstash")
    cache = Cache(type="redis", host="127.0.0.1", port=auth_server.port, password="wrong-pass")
    llmstash.cache = cache
    answers = []
    for round_ in range(2):
        for _ in range(3):
            started = time.monotonic()
            answers.append(ask(upstream))
            assert time.monotonic() - started < 3
        if round_ == 0:
            time.sleep(0.6)  # past the 0.5 s pause: the backend tries Redis again, and fails again
    assert [answer._hidden_params["cache_hit"] for answer in answers] == [False] * 6
    assert len({answer.id for answer in answers}) == 6
    assert upstream.call_count("chat/completions") == 6
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["writes"]) == (0, 6, 0)
    assert stats["errors"] >= 6
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    # one WARNING per kind of trouble (a failed read, a failed write), DEBUG for every repeat
    assert sum("cache read failed" in message for message in warnings) == 1, warnings
    assert sum("cache write failed" in message for message in warnings) <= 1, warnings
    assert all("cache read failed" in message or "cache write failed" in message for message in warnings), warnings
    repeats = [
        record for record in caplog.records if record.levelno == logging.DEBUG and "cache read failed" in record.getMessage()
    ]
    assert len(repeats) == 5
    assert "wrong-pass" not in caplog.text
    assert auth_server.client().dbsize() == 0


def test_server_killed_mid_run_every_call_succeeds_and_hits_resume(own_server: ValkeyServer, upstream: MockUpstream) -> None:
    cache = Cache(type="redis", url=own_server.url)
    llmstash.cache = cache
    reached, killed = threading.Event(), threading.Event()

    def killer() -> None:
        if reached.wait(30):
            own_server.kill()
            killed.set()

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    hits: list[bool] = []
    slowest = 0.0
    for i in range(300):
        if i == 100:
            reached.set()  # the server dies while the next calls run
        if i == 150:
            assert killed.wait(10)
        started = time.monotonic()
        answer = ask(upstream, f"question {i % 10}")
        slowest = max(slowest, time.monotonic() - started)
        assert answer.choices[0].message.content
        hits.append(answer._hidden_params["cache_hit"])
    thread.join(10)
    assert slowest < 3
    assert hits[:10] == [False] * 10 and all(hits[10:100])  # Redis served the repeats
    assert not any(hits[150:])  # the server is gone: every call went upstream
    assert cache.stats()["errors"] > 0

    own_server.restart()  # same port, empty
    restarted = time.monotonic()
    while True:
        answer = ask(upstream, "after the restart")
        if answer._hidden_params["cache_hit"]:
            break
        assert time.monotonic() - restarted < 2, "no hit within 2 s of the restart"
        time.sleep(0.05)
    assert len(entry_keys(own_server.client())) >= 1


def test_server_paused_calls_finish_in_bounded_time(own_server: ValkeyServer, upstream: MockUpstream) -> None:
    cache = Cache(type="redis", url=own_server.url)
    llmstash.cache = cache
    first = ask(upstream, "before the pause")
    assert_same_answer(ask(upstream, "before the pause"), first)

    own_server.pause()
    try:
        durations = []
        for i in range(6):
            started = time.monotonic()
            answer = ask(upstream, "before the pause" if i % 2 else f"during the pause {i}")
            durations.append(time.monotonic() - started)
            assert answer.choices[0].message.content
            assert answer._hidden_params["cache_hit"] is False
        started = time.monotonic()
        answer = asyncio.run(
            acompletion(model="openai/demo", messages=[{"role": "user", "content": "async, paused"}], api_base=upstream.base_url)
        )
        durations.append(time.monotonic() - started)
        assert answer.choices[0].message.content
        assert max(durations) < 3, durations
        assert cache.stats()["errors"] > 0
    finally:
        own_server.resume()

    deadline = time.monotonic() + 5
    while not ask(upstream, "before the pause")._hidden_params["cache_hit"]:
        assert time.monotonic() < deadline, "no hit within 5 s of the resume"
        time.sleep(0.05)


# ----- single flight across processes ---------------------------------------------------------

CHILD_FLIGHT = """
import asyncio, json, os, sys, time
import llmstash
from llmstash.caching import Cache
url, base, barrier, name, mode = sys.argv[1:6]
llmstash.cache = Cache(type="redis", url=url)
kwargs = dict(model="openai/demo", messages=[{"role": "user", "content": "one answer for everyone"}], api_base=base)
open(os.path.join(barrier, "ready-" + name), "w").close()
deadline = time.monotonic() + 20
while not os.path.exists(os.path.join(barrier, "go")):
    if time.monotonic() > deadline:
        sys.exit("no go signal")
    time.sleep(0.002)
started = time.monotonic()
if mode == "async":
    answer = asyncio.run(llmstash.acompletion(**kwargs))
else:
    answer = llmstash.completion(**kwargs)
seconds = time.monotonic() - started
stats = llmstash.cache.stats()
print(json.dumps({"id": answer.id, "cache_hit": answer._hidden_params["cache_hit"], "seconds": seconds, "stats": stats}))
"""


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_single_flight_across_processes(server: ValkeyServer, tmp_path: Path, mode: str) -> None:
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    with MockUpstream(delay=1.0) as slow:
        children = [
            subprocess.Popen(
                [sys.executable, "-c", CHILD_FLIGHT, server.url, slow.base_url, str(barrier), str(n), mode],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=child_env(),
            )
            for n in range(3)
        ]
        try:
            deadline = time.monotonic() + CHILD_TIMEOUT
            while len(list(barrier.glob("ready-*"))) < 3:
                assert all(child.poll() is None for child in children), "a child exited early"
                assert time.monotonic() < deadline, "the children did not get ready"
                time.sleep(0.01)
            (barrier / "go").touch()
            outputs = [child.communicate(timeout=CHILD_TIMEOUT) for child in children]
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
        for child, (_, stderr) in zip(children, outputs, strict=True):
            assert child.returncode == 0, stderr
        results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
        assert slow.call_count("chat/completions") == 1
    assert len({result["id"] for result in results}) == 1
    assert sorted(result["cache_hit"] for result in results) == [False, True, True]
    assert sorted(result["stats"]["coalesced"] for result in results) == [0, 1, 1]
    assert all(result["seconds"] < 10 for result in results)
    assert server.client().keys("llmstash-lock:*") == []  # the leader released its lock


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_lock_released_just_after_a_waiters_look_is_still_one_upstream_call(
    server: ValkeyServer, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """A waiter looks for the answer (not there yet), then the holder stores it and releases the
    lock, then the waiter sees the lock free and takes it: it must find the stored answer rather
    than call upstream again. The waiter's lock check is held until the release to make it so."""
    raw = server.client()
    with MockUpstream(delay=0.5) as slow:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD_ASK, server.url, slow.base_url, "released late"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        try:
            deadline = time.monotonic() + CHILD_TIMEOUT
            while not (locks := raw.keys("llmstash-lock:*")):  # the child holds the lock, upstream is slow
                assert child.poll() is None, child.communicate()[1]
                assert time.monotonic() < deadline, "the child never took the lock"
                time.sleep(0.005)
            lock_name = locks[0]

            cache = Cache(type="redis", url=server.url)
            llmstash.cache = cache
            checks: list[float] = []

            def released() -> bool:
                return not raw.exists(lock_name)

            def held_check(real: Any) -> Any:
                def locked(key: str) -> bool:
                    checks.append(time.monotonic())
                    if len(checks) > 1:  # after the first look: return only once the child has let go
                        until = time.monotonic() + 10
                        while not released() and time.monotonic() < until:
                            time.sleep(0.005)
                    return bool(real(key))

                return locked

            def aheld_check(real: Any) -> Any:
                async def alocked(key: str) -> bool:
                    checks.append(time.monotonic())
                    if len(checks) > 1:
                        until = time.monotonic() + 10
                        while not released() and time.monotonic() < until:
                            await asyncio.sleep(0.005)
                    return bool(await real(key))

                return alocked

            kwargs = dict(model="openai/demo", messages=[{"role": "user", "content": "released late"}], api_base=slow.base_url)
            if mode == "sync":
                monkeypatch.setattr(cache.storage, "locked", held_check(cache.storage.locked))
                answer = completion(**kwargs)
            else:
                monkeypatch.setattr(cache.storage, "alocked", aheld_check(cache.storage.alocked))
                answer = asyncio.run(acompletion(**kwargs))
            out, err = child.communicate(timeout=CHILD_TIMEOUT)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert child.returncode == 0, err
        assert slow.call_count("chat/completions") == 1
    first = json.loads(out.strip().splitlines()[-1])
    assert len(checks) >= 2  # the waiter did look while the child held the lock
    assert answer._hidden_params["cache_hit"] is True
    assert answer.id == first["id"]
    assert cache.stats()["coalesced"] == 1
    assert raw.keys("llmstash-lock:*") == []


# ----- the local tier ----------------------------------------------------------------------------


def test_local_tier_serves_a_deleted_entry_until_local_tier_ttl(server: ValkeyServer, upstream: MockUpstream, clock: Any) -> None:
    llmstash.cache = Cache(type="redis", url=server.url, local_tier_ttl=5, clock=clock)
    first = ask(upstream)
    key = "llmstash:" + first._hidden_params["cache_key"]
    raw = server.client()
    assert raw.delete(key) == 1  # another process deletes the entry in Redis
    clock.advance(4.9)
    assert_same_answer(ask(upstream), first)  # still served from this process's memory
    assert upstream.call_count("chat/completions") == 1
    clock.advance(0.2)  # past the documented staleness bound of 5 s
    third = ask(upstream)
    assert third._hidden_params["cache_hit"] is False and third.id != first.id
    assert upstream.call_count("chat/completions") == 2
    assert raw.exists(key) == 1  # the fresh answer went to Redis too


def test_local_tier_keeps_what_it_reads_from_redis(server: ValkeyServer, upstream: MockUpstream, clock: Any) -> None:
    writer = Cache(type="redis", url=server.url)
    llmstash.cache = writer
    first = ask(upstream)
    llmstash.cache = Cache(type="redis", url=server.url, local_tier_ttl=5, clock=clock)
    assert_same_answer(ask(upstream), first)  # from Redis, now kept in memory too
    server.client().delete("llmstash:" + first._hidden_params["cache_key"])
    assert_same_answer(ask(upstream), first)
    clock.advance(5.1)
    assert ask(upstream)._hidden_params["cache_hit"] is False
    writer.close()


# ----- async paths, standalone and cluster -----------------------------------------------------


def test_async_completion_and_embedding_batch(where: dict[str, Any], upstream: MockUpstream) -> None:
    cache = Cache(type="redis", **where["options"])
    llmstash.cache = cache
    texts = [f"async item {i}" for i in range(30)]
    model = "openai/text-embedding-3-small"

    async def scenario() -> list[Any]:
        miss = await acompletion(model="openai/demo", messages=MESSAGES, api_base=upstream.base_url)
        hit = await acompletion(model="openai/demo", messages=MESSAGES, api_base=upstream.base_url)
        e1 = await aembedding(model=model, input=texts[:20], api_base=upstream.base_url)
        e2 = await aembedding(model=model, input=texts[10:], api_base=upstream.base_url)
        e3 = await aembedding(model=model, input=texts, api_base=upstream.base_url)
        return [miss, hit, e1, e2, e3]

    miss, hit, e1, e2, e3 = asyncio.run(scenario())
    assert_same_answer(hit, miss)
    assert upstream.call_count("chat/completions") == 1
    assert e1._hidden_params["cached_items"] == 0
    assert e2._hidden_params["cached_items"] == 10
    assert upstream.calls[-1].body["input"] == texts[20:]
    assert e3._hidden_params["cache_hit"] is True and e3._hidden_params["cached_items"] == 30
    assert upstream.call_count("embeddings") == 2
    vectors = [item["embedding"] for item in e3.model_dump()["data"]]
    assert vectors[:20] == [item["embedding"] for item in e1.model_dump()["data"]]
    assert vectors[10:] == [item["embedding"] for item in e2.model_dump()["data"]]
    assert len(where["keys"]()) == 31

    # a second event loop gets a client of its own, and the same entries
    again = asyncio.run(acompletion(model="openai/demo", messages=MESSAGES, api_base=upstream.base_url))
    assert_same_answer(again, miss)
    # and the sync side sees what the async side stored
    assert_same_answer(completion(model="openai/demo", messages=MESSAGES, api_base=upstream.base_url), miss)
    assert cache.stats()["errors"] == 0


def test_buffered_writes_turn_cross_process_locks_off(redis_url: str) -> None:
    # other processes could not see a buffered answer, so they must not wait for one
    assert Cache(type="redis", url=redis_url, redis_flush_size=10).locks is None
    assert Cache(type="redis", url=redis_url).locks is not None


def test_flush_cache_of_a_namespaced_cache_keeps_other_namespaces(redis_url: str) -> None:
    team_a = Cache(type="redis", url=redis_url, namespace="team-a")
    team_b = Cache(type="redis", url=redis_url, namespace="team-b")
    team_a.add_cache("a", cache_key="team-a:k")
    team_b.add_cache("b", cache_key="team-b:k")
    team_a.flush_cache()
    assert team_a.get_cache(cache_key="team-a:k") is None
    assert team_b.get_cache(cache_key="team-b:k") == "b"
