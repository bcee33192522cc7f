"""Bad input: each a clear error (``ConfigurationError`` naming the parameter) or a correct miss,
never a crash and never a wrong hit.

Covered elsewhere and not repeated here: unknown cache types, modes, controls and backend
parameters, wrong control types and negative seconds (test_controls_and_modes), bad embedding
inputs (test_embedding_batches), Redis options (test_redis), odd keys at the storage level
(test_backend_conformance), and the key/envelope/batch-merge properties (test_keys,
test_embedding_batches). This file adds what they stop short of.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import llmstash
from llmstash import acompletion, aembedding, completion, embedding, text_completion, transcription
from llmstash._core.keys import item_keys, request_key, with_namespace
from llmstash.caching import Cache
from llmstash.exceptions import ConfigurationError
from llmstash.testing import MockUpstream

MESSAGES = [{"role": "user", "content": "a plain question"}]
SURROGATE = "half a character: \ud800 here"


@pytest.fixture(params=["local", "disk", "redis"])
def options(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Cache options for each kind of backend (the Redis one a clean standalone server)."""
    if request.param == "local":
        return {"type": "local"}
    if request.param == "disk":
        return {"type": "disk", "disk_cache_dir": str(tmp_path / "disk")}
    return {"type": "redis", "url": request.getfixturevalue("redis_url")}


def hit(response: Any) -> bool:
    return bool(response._hidden_params["cache_hit"])


# ----- Cache(...) arguments not checked elsewhere -------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"max_item_bytes": 0}, "max_item_bytes"),
        ({"max_item_bytes": -1}, "max_item_bytes"),
        ({"max_item_bytes": "1024"}, "max_item_bytes"),
        ({"max_item_bytes": True}, "max_item_bytes"),
        ({"max_item_bytes": 1.5}, "max_item_bytes"),
        ({"max_item_bytes": None}, "max_item_bytes"),
        ({"local_tier_ttl": 5}, "local_tier_ttl"),  # type="local" has no shared backend to put it before
        ({"type": "disk", "local_tier_ttl": 0}, "local_tier_ttl"),
        ({"type": "disk", "local_tier_ttl": -1}, "local_tier_ttl"),
        ({"type": "disk", "local_tier_ttl": "5"}, "local_tier_ttl"),
        ({"clock": "time.time"}, "clock"),
        ({"default_in_redis_ttl": 5}, "default_in_redis_ttl"),
        ({"default_in_memory_ttl": float("nan")}, "default_in_memory_ttl"),
        ({"max_size_in_memory": 10.0}, "max_size_in_memory"),
        ({"max_memory_bytes": "1GB"}, "max_memory_bytes"),
    ],
)
def test_bad_cache_arguments_are_errors_naming_them(kwargs: dict[str, Any], name: str, tmp_path: Path) -> None:
    if kwargs.get("type") == "disk":
        kwargs = {**kwargs, "disk_cache_dir": str(tmp_path)}
    with pytest.raises(ConfigurationError, match=name):
        Cache(**kwargs)


# ----- numbers at the edges: NaN, infinity, beyond the float range -----------------------------------


@pytest.mark.parametrize("timeout", [float("nan"), float("-inf"), -(10**400)])
def test_timeout_that_is_not_a_positive_number_is_an_error(upstream: MockUpstream, timeout: float) -> None:
    llmstash.cache = Cache()
    with pytest.raises(ConfigurationError, match="timeout"):
        completion(model="openai/demo", messages=MESSAGES, api_base=upstream.base_url, timeout=timeout)
    with pytest.raises(ConfigurationError, match="timeout"):
        asyncio.run(acompletion(model="openai/demo", messages=MESSAGES, api_base=upstream.base_url, timeout=timeout))
    assert upstream.call_count() == 0


@pytest.mark.parametrize("timeout", [float("inf"), 1e300, 10**400], ids=["inf", "1e300", "10**400"])
def test_timeout_beyond_what_clocks_hold_means_no_limit(timeout: float) -> None:
    """Identical calls in threads and in tasks wait for one leader, with a timeout too long for a
    socket or a lock to hold (it used to be an OverflowError for every one of them)."""
    llmstash.cache = Cache()
    with MockUpstream(delay=0.3) as slow:
        kwargs = dict(model="openai/demo", messages=MESSAGES, api_base=slow.base_url, timeout=timeout)
        results: list[Any] = []
        threads = [threading.Thread(target=lambda: results.append(completion(**kwargs))) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert len(results) == 3 and len({response.id for response in results}) == 1

        async def tasks() -> list[Any]:
            other = dict(kwargs, messages=[{"role": "user", "content": "another question"}])
            return await asyncio.gather(*(acompletion(**other) for _ in range(3)))

        assert len({response.id for response in asyncio.run(tasks())}) == 1
        streamed = list(completion(**dict(kwargs, messages=[{"role": "user", "content": "streamed"}], stream=True)))
        assert streamed
        assert slow.call_count("chat/completions") == 3


@pytest.mark.parametrize("seconds", [float("inf"), 1e300, 10**400], ids=["inf", "1e300", "10**400"])
def test_ttl_beyond_the_float_range_or_infinite_is_stored_and_served(options: dict[str, Any], seconds: float) -> None:
    """A TTL longer than Redis can express (or than a float can) keeps the entry: it is not an
    OverflowError, and Redis does not refuse every write."""
    cache = Cache(**options)
    llmstash.cache = cache
    kwargs = dict(model="openai/demo", messages=MESSAGES, mock_response="kept for a long time")
    first = completion(**kwargs, cache={"ttl": seconds, "s-maxage": seconds})
    second = completion(**kwargs, cache={"s-maxage": seconds})
    assert hit(second) and second.id == first.id
    cache.add_cache("value", cache_key="long-lived", ttl=seconds)
    assert cache.get_cache(cache_key="long-lived") == "value"
    assert cache.stats()["errors"] == 0
    if options["type"] == "redis":
        assert redis.Redis.from_url(options["url"]).pttl("llmstash:long-lived") == -1  # no expiry Redis could not hold
    cache.close()


def test_cache_wide_ttl_beyond_the_float_range_is_forever(clock: Any) -> None:
    cache = Cache(ttl=10**400, clock=clock)
    assert cache.ttl == float("inf")
    cache.add_cache("v", cache_key="k")
    clock.advance(10**12)
    assert cache.get_cache(cache_key="k") == "v"


# ----- text that is not valid UTF-8 (lone surrogates) ---------------------------------------------------


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "no-cache"])
def test_a_lone_surrogate_in_a_request_is_an_error_naming_the_parameter(upstream: MockUpstream, cached: bool) -> None:
    llmstash.cache = Cache() if cached else None
    base = dict(model="openai/demo", api_base=upstream.base_url)
    bad_messages = [{"role": "user", "content": SURROGATE}]

    async def astream() -> Any:
        return await acompletion(**base, messages=bad_messages, stream=True)

    attempts = {
        "messages=": [
            lambda: completion(**base, messages=bad_messages),
            lambda: asyncio.run(acompletion(**base, messages=bad_messages)),
            lambda: completion(**base, messages=bad_messages, stream=True),
            lambda: asyncio.run(astream()),
        ],
        "prompt=": [lambda: text_completion(**base, prompt=SURROGATE)],
        "input=": [
            lambda: embedding(**base, input=["fine", SURROGATE]),
            lambda: asyncio.run(aembedding(**base, input=SURROGATE)),
        ],
        "user=": [lambda: completion(**base, messages=MESSAGES, user=SURROGATE)],
        "stop=": [lambda: completion(**base, messages=MESSAGES, stop=[SURROGATE])],
    }
    for name, calls in attempts.items():
        for attempt in calls:
            with pytest.raises(ConfigurationError, match=name):
                attempt()
    with pytest.raises(ConfigurationError, match="prompt="):  # a transcription's form field
        transcription(model="whisper-1", file=b"RIFF-audio", prompt=SURROGATE, api_base=upstream.base_url)
    assert upstream.call_count() == 0  # nothing half-sent
    if cached:
        assert llmstash.cache is not None and llmstash.cache.stats()["errors"] == 0
        # the same request with valid text still works, and is cached
        first = completion(**base, messages=MESSAGES)
        assert hit(completion(**base, messages=MESSAGES)) and upstream.call_count() == 1 and first.id


def test_an_answer_with_a_lone_surrogate_is_served_but_not_kept() -> None:
    """The cache cannot keep such an answer (JSON cannot carry it): the call still succeeds, as it
    does without a cache (it used to fail with TypeError when a cache was active)."""
    cache = Cache()
    llmstash.cache = cache
    kwargs = dict(model="openai/demo", messages=MESSAGES, mock_response=SURROGATE)
    assert completion(**kwargs).choices[0].message.content == SURROGATE
    assert asyncio.run(acompletion(**kwargs)).choices[0].message.content == SURROGATE
    chunks = list(completion(**kwargs, stream=True))
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices) == SURROGATE
    again = completion(**kwargs)
    assert not hit(again)  # a miss, not a wrong hit
    assert len(cache.storage) == 0  # type: ignore[arg-type]
    stats = cache.stats()
    assert (stats["hits"], stats["writes"]) == (0, 0)

    def identical_calls_at_once() -> list[Any]:
        results: list[Any] = []
        threads = [threading.Thread(target=lambda: results.append(completion(**kwargs))) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        return results

    assert [response.choices[0].message.content for response in identical_calls_at_once()] == [SURROGATE] * 4


def test_keys_and_namespaces_with_lone_surrogates_are_misses_never_aliases(options: dict[str, Any]) -> None:
    """Memory keeps them; disk and Redis cannot encode them, so they are never stored: each is a
    miss (counted as a failed operation), and two different ones never share an entry."""
    cache = Cache(**options)
    cache.add_cache("first", cache_key="key \ud800")
    cache.add_cache("second", cache_key="key \udc00")
    found = [cache.get_cache(cache_key="key \ud800"), cache.get_cache(cache_key="key \udc00"), cache.get_cache(cache_key="key ?")]
    assert found == (["first", "second", None] if options["type"] == "local" else [None, None, None])
    odd = Cache(**options, namespace="tenant \udfff")
    llmstash.cache = odd
    kwargs = dict(model="openai/demo", messages=MESSAGES, mock_response="answer")
    first = completion(**kwargs)
    second = completion(**kwargs)
    assert hit(second) is (options["type"] == "local")
    assert second.choices[0].message.content == first.choices[0].message.content == "answer"
    cache.close()
    odd.close()


# ----- huge prompts ------------------------------------------------------------------------------------


def test_a_5_mb_prompt_is_keyed_by_its_hash(options: dict[str, Any], upstream: MockUpstream) -> None:
    cache = Cache(**options)
    llmstash.cache = cache
    huge = "many words " * (5 * 2**20 // 11)
    assert len(huge) >= 5 * 10**6
    started = time.monotonic()
    first = completion(model="openai/demo", messages=[{"role": "user", "content": huge}], mock_response="short answer")
    second = completion(model="openai/demo", messages=[{"role": "user", "content": huge}], mock_response="short answer")
    other = completion(model="openai/demo", messages=[{"role": "user", "content": huge[:-1] + "!"}], mock_response="short answer")
    assert time.monotonic() - started < 10
    assert not hit(first) and hit(second) and second.id == first.id
    assert not hit(other) and other.id != first.id  # one character apart: another entry
    assert len(first._hidden_params["cache_key"]) == 64
    # through the upstream too: 5 MB sent, the entry holds the answer only
    sent = completion(model="openai/demo", messages=[{"role": "user", "content": huge}], api_base=upstream.base_url)
    assert hit(completion(model="openai/demo", messages=[{"role": "user", "content": huge}], api_base=upstream.base_url))
    assert upstream.call_count("chat/completions") == 1
    assert len(upstream.calls[0].body["messages"][0]["content"]) == len(huge)
    raw = cache.storage.get(sent._hidden_params["cache_key"])
    assert raw is not None and len(raw) < 10_000
    cache.close()


# ----- oversized answers (max_item_bytes) ---------------------------------------------------------------


def test_oversized_answers_of_every_kind_are_served_not_stored(options: dict[str, Any], upstream: MockUpstream) -> None:
    limit = 2_000
    cache = Cache(**options, max_item_bytes=limit)
    llmstash.cache = cache
    long_words = " ".join("w" * 400 for _ in range(8))  # the mock upstream echoes 8 words: a ~3.3 kB answer
    base = dict(model="openai/demo", api_base=upstream.base_url)
    for _ in range(2):  # asked twice: both times upstream
        assert len(list(completion(**base, messages=[{"role": "user", "content": long_words}], stream=True))) > 1

        async def astream() -> None:
            stream = await acompletion(**base, messages=[{"role": "user", "content": long_words + " async"}], stream=True)
            async for _chunk in stream:
                pass

        asyncio.run(astream())
        assert not hit(text_completion(**base, prompt=long_words))
        wide = embedding(**base, input=["a", "b"], dimensions=400)  # ~4 kB per vector
        assert wide._hidden_params["cached_items"] == 0 and len(wide.data[0].embedding) == 400
    assert upstream.call_count("chat/completions") == 4
    assert upstream.call_count("completions") - upstream.call_count("chat/completions") == 2
    assert upstream.call_count("embeddings") == 2
    stats = cache.stats()
    assert stats["oversized"] == 2 * (1 + 1 + 1 + 2)
    assert (stats["writes"], stats["errors"]) == (0, 0)
    # the control: an answer under the limit is kept
    completion(**base, messages=[{"role": "user", "content": "short"}])
    assert hit(completion(**base, messages=[{"role": "user", "content": "short"}]))
    cache.close()


# ----- odd namespaces: a flush stays inside its own --------------------------------------------------


@pytest.mark.parametrize("where", ["local", "disk", "redis", "redis-cluster"])
def test_flushing_a_namespace_with_glob_characters_leaves_the_others(
    where: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if where == "redis-cluster":
        shared: dict[str, Any] = {"type": "redis", "redis_startup_nodes": request.getfixturevalue("cluster_nodes")}
    elif where == "redis":
        shared = {"type": "redis", "url": request.getfixturevalue("redis_url")}
    elif where == "disk":
        shared = {"type": "disk", "disk_cache_dir": str(tmp_path / "disk")}
    else:
        shared = {"type": "local"}
    namespaces = ["t[1]*", "t1", "t[1]x", "t[1]", "t?", "t\\", "t*", "t[1]*x", "T[1]*"]
    caches = {ns: Cache(**shared, namespace=ns) for ns in namespaces}
    if where == "local":  # one process-local store shared by the namespaces
        store = caches["t[1]*"].storage
        for cache in caches.values():
            cache.storage = store
    kwargs = dict(model="openai/demo", messages=MESSAGES, mock_response="namespaced")
    for cache in caches.values():
        llmstash.cache = cache
        completion(**kwargs)
    caches["t[1]*"].flush_cache()
    for ns, cache in caches.items():
        llmstash.cache = cache
        assert hit(completion(**kwargs)) is (ns != "t[1]*"), ns
    for cache in caches.values():
        cache.close()


# ----- properties: two different requests never share a key --------------------------------------------

KEYED = ["temperature", "top_p", "n", "seed", "stop", "user", "tools", "logit_bias", "response_format", "provider_knob"]
NOT_KEYED = ["timeout", "stream", "metadata", "api_key", "aws_secret_access_key", "extra_headers", "organization"]
INTS = st.integers(min_value=-(2**63), max_value=2**63 - 1)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
SCALARS = st.none() | st.booleans() | INTS | FLOATS | st.text(max_size=6)
JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8
)
REQUESTS = st.fixed_dictionaries(
    {
        "family": st.sampled_from(["chat", "text", "embedding"]),
        "model": st.sampled_from(["openai/a", "openai/b", "azure/a"]),
        "endpoint": st.sampled_from(["http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1", None]),
        "payload": JSON,
        "params": st.dictionaries(st.sampled_from(KEYED + NOT_KEYED), JSON, max_size=4),
    }
)
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def param_model(value: Any) -> Any:
    """When two parameter values are the same request, modelled independently of the code under
    test: JSON equality where numbers compare by value (1 == 1.0) but booleans are not numbers."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("num", value)
    if isinstance(value, list):
        return ("list", tuple(param_model(item) for item in value))
    if isinstance(value, dict):
        return ("dict", frozenset((str(name), param_model(item)) for name, item in value.items()))
    return (type(value).__name__, value)


def payload_model(value: Any) -> Any:
    """The payload is keyed exactly as given: 1 and 1.0 (and 0.0 and -0.0) are different texts."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, float):
        return ("float", repr(value))
    if isinstance(value, list):
        return ("list", tuple(payload_model(item) for item in value))
    if isinstance(value, dict):
        return ("dict", frozenset((name, payload_model(item)) for name, item in value.items()))
    return (type(value).__name__, value)


def same_request(request: dict[str, Any]) -> Any:
    keyed = {name: param_model(value) for name, value in request["params"].items() if name in KEYED}
    return (request["family"], request["model"], request["endpoint"], payload_model(request["payload"]), frozenset(keyed.items()))


def key_of(request: dict[str, Any]) -> str:
    return request_key(request["family"], request["model"], request["endpoint"], request["payload"], request["params"])


def variant(request: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """Another request near this one: the same spelled differently, or one thing changed."""
    how = data.draw(
        st.sampled_from(["fresh", "reordered", "one-param", "drop-param", "unkeyed", "payload", "route", "int-float"])
    )
    params = dict(request["params"])
    if how == "fresh":
        return data.draw(REQUESTS)
    if how == "reordered":
        return {**request, "params": dict(reversed(list(params.items())))}
    if how == "one-param":
        params[data.draw(st.sampled_from(KEYED))] = data.draw(JSON)
    elif how == "drop-param" and params:
        params.pop(data.draw(st.sampled_from(sorted(params))))
    elif how == "unkeyed":
        params[data.draw(st.sampled_from(NOT_KEYED))] = data.draw(JSON)
    elif how == "payload":
        return {**request, "payload": data.draw(JSON)}
    elif how == "route":
        return {**request, **data.draw(st.sampled_from([{"model": "openai/b"}, {"endpoint": None}, {"family": "text"}]))}
    elif how == "int-float":
        params = {name: float(value) if type(value) is int and abs(value) < 2**53 else value for name, value in params.items()}
    return {**request, "params": params}


@PROPERTY
@given(request=REQUESTS, data=st.data())
def test_two_requests_share_a_key_exactly_when_they_are_the_same_request(request: dict[str, Any], data: st.DataObject) -> None:
    other = variant(request, data)
    assert (key_of(request) == key_of(other)) == (same_request(request) == same_request(other))


ITEMS = st.text(min_size=1, max_size=8) | st.lists(st.integers(0, 50_000), min_size=1, max_size=4)


@PROPERTY
@given(
    users=st.lists(st.none() | st.sampled_from(["alice", "bob", "Alice"]), min_size=2, max_size=2),
    dims=st.lists(st.none() | st.sampled_from([256, 256.0, 512]), min_size=2, max_size=2),
    items=st.lists(ITEMS, min_size=2, max_size=2),
)
def test_two_embedding_items_share_a_key_exactly_when_user_parameters_and_item_match(
    users: list[str | None], dims: list[float | None], items: list[Any]
) -> None:
    def params(user: str | None, dimensions: float | None) -> dict[str, Any]:
        chosen = {"user": user, "dimensions": dimensions, "api_key": f"key-of-{user}"}
        return {name: value for name, value in chosen.items() if value is not None}

    keys = [item_keys("embedding-item", "openai/e", None, params(users[i], dims[i]), [items[i]])[0] for i in range(2)]
    same = users[0] == users[1] and dims[0] == dims[1] and payload_model(items[0]) == payload_model(items[1])
    assert (keys[0] == keys[1]) == same


@PROPERTY
@given(
    namespaces=st.lists(
        st.lists(st.text(st.characters(blacklist_characters=":"), min_size=1, max_size=5), max_size=2), min_size=2, max_size=2
    ),
    keys=st.lists(st.sampled_from([request_key("chat", "openai/a", None, n, {}) for n in range(3)]), min_size=2, max_size=2),
)
def test_namespaced_keys_are_distinct_across_namespaces(namespaces: list[list[str]], keys: list[str]) -> None:
    full = [with_namespace(keys[i], *namespaces[i]) for i in range(2)]
    assert (full[0] == full[1]) == (namespaces[0] == namespaces[1] and keys[0] == keys[1])
