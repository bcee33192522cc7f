"""Embedding batches item by item: each input item is its own entry; only the missing items go
upstream, in one request; answers come back in the caller's order with the right vectors, usage
and cache facts; per-call controls apply per item; a broken storage or a wrong upstream answer is
handled. Plus property tests of the pure parts (``_core.batches``)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmstash
from llmstash._core.batches import fresh_vectors, merge, missing_items, split_input
from llmstash.backends.base import Storage
from llmstash.caching import Cache
from llmstash.integrations.custom_logger import CustomLogger
from llmstash.testing import MockUpstream
from llmstash.testing.upstream import vector_for

MODEL = "text-embedding-3-small"
DIMS = 8  # MockUpstream's default vector length


def emb(server: MockUpstream, items: Any, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "input": items, "api_base": server.base_url, "timeout": 10, **extra}


def vectors(response: Any) -> list[list[float]]:
    return [item.embedding for item in response.data]


def expected(items: Sequence[Any], dims: int = DIMS) -> list[list[float]]:
    """What the mock upstream answers for each item (independent of llmstash)."""
    return [vector_for(str(item), dims) for item in items]


def sent_inputs(server: MockUpstream) -> list[Any]:
    return [call.body["input"] for call in server.calls if call.path.endswith("/embeddings")]


def facts(response: Any) -> tuple[bool, int, int]:
    hidden = response._hidden_params
    return hidden["cache_hit"], hidden["cached_items"], hidden["total_items"]


def check_shape(response: Any, n: int) -> None:
    assert isinstance(response, llmstash.EmbeddingResponse)
    assert response.object == "list"
    assert [item.index for item in response.data] == list(range(n))
    assert all(item.object == "embedding" for item in response.data)


@pytest.fixture(params=["local", "disk"])
def cache(request, tmp_path) -> Iterator[Cache]:
    made = Cache() if request.param == "local" else Cache(type="disk", disk_cache_dir=str(tmp_path / "c"))
    llmstash.cache = made
    yield made


# ----- item by item -------------------------------------------------------------------------------


def test_only_missing_items_go_upstream_in_one_request(upstream, cache):
    first = llmstash.embedding(**emb(upstream, ["alpha", "beta"]))
    check_shape(first, 2)
    assert vectors(first) == expected(["alpha", "beta"])
    assert facts(first) == (False, 0, 2)

    batch = ["beta", "gamma", "alpha", "delta"]
    second = llmstash.embedding(**emb(upstream, batch))
    assert sent_inputs(upstream) == [["alpha", "beta"], ["gamma", "delta"]]
    check_shape(second, 4)
    assert vectors(second) == expected(batch)
    assert facts(second) == (False, 2, 4)
    assert second._hidden_params["cache_key"] is None
    assert second.model == MODEL

    fresh = llmstash.embedding(**emb(upstream, batch, cache={"no-cache": True, "no-store": True}))
    assert vectors(second) == vectors(fresh)


def test_all_items_cached_is_a_hit_with_zero_usage(upstream, cache):
    llmstash.embedding(**emb(upstream, ["one", "two", "three"]))
    again = llmstash.embedding(**emb(upstream, ["three", "one"]))
    assert upstream.call_count("embeddings") == 1
    check_shape(again, 2)
    assert vectors(again) == expected(["three", "one"])
    assert facts(again) == (True, 2, 2)
    assert again.usage.prompt_tokens == 0 and again.usage.total_tokens == 0
    assert again.model == MODEL


def test_usage_is_what_the_upstream_billed_for_the_new_items(upstream, cache):
    llmstash.embedding(**emb(upstream, ["a cached item"]))
    response = llmstash.embedding(**emb(upstream, ["a cached item", "four new words here", "x"]))
    assert sent_inputs(upstream)[-1] == ["four new words here", "x"]
    # the mock bills one token per word: 4 + 1 for the items sent, nothing for the cached one
    assert (response.usage.prompt_tokens, response.usage.total_tokens) == (5, 5)


def test_duplicates_inside_a_batch_are_sent_once(upstream, cache):
    batch = ["x", "y", "x", "x", "y"]
    response = llmstash.embedding(**emb(upstream, batch))
    assert sent_inputs(upstream) == [["x", "y"]]
    check_shape(response, 5)
    assert vectors(response) == expected(batch)
    assert facts(response) == (False, 0, 5)

    mixed = ["z", "x", "z", "w", "x"]
    response = llmstash.embedding(**emb(upstream, mixed))
    assert sent_inputs(upstream)[-1] == ["z", "w"]
    assert vectors(response) == expected(mixed)
    assert facts(response) == (False, 2, 5)


def test_a_string_input_is_one_item(upstream, cache):
    single = llmstash.embedding(**emb(upstream, "hello world"))
    check_shape(single, 1)
    assert vectors(single) == expected(["hello world"])
    pair = llmstash.embedding(**emb(upstream, ["hello world", "second"]))
    assert sent_inputs(upstream)[-1] == ["second"]
    assert facts(pair) == (False, 1, 2)
    again = llmstash.embedding(**emb(upstream, "second"))
    assert facts(again) == (True, 1, 1) and vectors(again) == expected(["second"])
    assert upstream.call_count("embeddings") == 2


def test_token_id_inputs(upstream, cache):
    one = llmstash.embedding(**emb(upstream, [101, 2023, 102]))
    check_shape(one, 1)
    assert facts(one) == (False, 0, 1)
    assert sent_inputs(upstream) == [[[101, 2023, 102]]]  # one token array
    many = llmstash.embedding(**emb(upstream, [[7, 8], [101, 2023, 102], [9]]))
    assert sent_inputs(upstream)[-1] == [[7, 8], [9]]
    check_shape(many, 3)
    assert facts(many) == (False, 1, 3)
    assert vectors(many)[1] == vectors(one)[0]
    assert vectors(many) == expected([[7, 8], [101, 2023, 102], [9]])
    # a token array and the string of its digits are different items
    llmstash.embedding(**emb(upstream, ["[7, 8]"]))
    assert upstream.call_count("embeddings") == 3


@pytest.mark.parametrize(
    "bad",
    [123, None, [], [1.5], ["a", 3], [{"text": "a"}], [True, False], {"input": "a"}, [["a"]], b"bytes"],
    ids=repr,
)
def test_bad_input_types_are_refused(upstream, bad):
    llmstash.cache = Cache()
    with pytest.raises(llmstash.ConfigurationError):
        llmstash.embedding(**emb(upstream, bad))
    with pytest.raises(llmstash.ConfigurationError):
        asyncio.run(llmstash.aembedding(**emb(upstream, bad)))
    assert upstream.calls == []


@pytest.mark.parametrize(
    ("name", "value"),
    [("encoding_format", "float"), ("dimensions", 4), ("model", "text-embedding-3-large"), ("user", "someone")],
)
def test_parameters_and_model_are_keyed(upstream, cache, name, value):
    llmstash.embedding(**emb(upstream, ["keyed item", "other"]))
    changed = llmstash.embedding(**emb(upstream, ["keyed item"], **{name: value}))
    assert upstream.call_count("embeddings") == 2
    assert facts(changed) == (False, 0, 1)
    assert upstream.calls[-1].body[name] == value
    if name == "dimensions":
        assert vectors(changed) == expected(["keyed item"], 4)
    # each variant is cached under its own keys
    again = llmstash.embedding(**emb(upstream, ["keyed item"], **{name: value}))
    assert facts(again) == (True, 1, 1) and vectors(again) == vectors(changed)
    original = llmstash.embedding(**emb(upstream, ["keyed item"]))
    assert facts(original) == (True, 1, 1) and vectors(original) == expected(["keyed item"])
    assert upstream.call_count("embeddings") == 2


def test_endpoint_is_keyed(cache):
    with MockUpstream() as one, MockUpstream() as two:
        llmstash.embedding(**emb(one, ["where"]))
        llmstash.embedding(**emb(two, ["where"]))
        assert one.call_count("embeddings") == two.call_count("embeddings") == 1


def test_items_are_not_shared_with_a_whole_request_entry(upstream, cache):
    """Embedding items and chat answers never collide, even for the same text."""
    llmstash.embedding(**emb(upstream, ["shared text"]))
    chat = llmstash.completion(model=MODEL, messages=[{"role": "user", "content": "shared text"}], api_base=upstream.base_url)
    assert chat._hidden_params["cache_hit"] is False


# ----- per-call controls, per item -----------------------------------------------------------------


def test_no_cache_sends_every_item_and_stores_them(upstream, cache):
    llmstash.embedding(**emb(upstream, ["kept"]))
    response = llmstash.embedding(**emb(upstream, ["kept", "new"], cache={"no-cache": True}))
    assert sent_inputs(upstream)[-1] == ["kept", "new"]
    assert facts(response) == (False, 0, 2)
    assert vectors(response) == expected(["kept", "new"])
    later = llmstash.embedding(**emb(upstream, ["new", "kept"]))
    assert facts(later) == (True, 2, 2)
    assert upstream.call_count("embeddings") == 2


def test_no_store_reads_but_does_not_write(upstream, cache):
    llmstash.embedding(**emb(upstream, ["stored"]))
    response = llmstash.embedding(**emb(upstream, ["stored", "passing"], cache={"no-store": True}))
    assert sent_inputs(upstream)[-1] == ["passing"]
    assert facts(response) == (False, 1, 2)
    later = llmstash.embedding(**emb(upstream, ["stored", "passing"]))
    assert sent_inputs(upstream)[-1] == ["passing"]  # it was not stored
    assert facts(later) == (False, 1, 2)


def test_ttl_applies_per_item(upstream, clock):
    llmstash.cache = Cache(clock=clock)
    llmstash.embedding(**emb(upstream, ["short"], cache={"ttl": 10}))
    clock.advance(5)
    llmstash.embedding(**emb(upstream, ["short", "long"], cache={"ttl": 100}))
    assert sent_inputs(upstream)[-1] == ["long"]
    clock.advance(10)  # "short" (stored at 0 for 10 s) has expired; "long" (stored at 5 for 100 s) has not
    response = llmstash.embedding(**emb(upstream, ["long", "short"]))
    assert sent_inputs(upstream)[-1] == ["short"]
    assert facts(response) == (False, 1, 2)
    assert vectors(response) == expected(["long", "short"])


def test_ttl_zero_keeps_nothing(upstream):
    llmstash.cache = Cache()
    llmstash.embedding(**emb(upstream, ["fleeting"], cache={"ttl": 0}))
    llmstash.embedding(**emb(upstream, ["fleeting"]))
    assert sent_inputs(upstream) == [["fleeting"], ["fleeting"]]


def test_cache_wide_ttl_applies_per_item(upstream, clock):
    llmstash.cache = Cache(ttl=60, clock=clock)
    llmstash.embedding(**emb(upstream, ["old"]))
    clock.advance(50)
    llmstash.embedding(**emb(upstream, ["old", "young"]))
    clock.advance(20)
    llmstash.embedding(**emb(upstream, ["old", "young"]))
    assert sent_inputs(upstream) == [["old"], ["young"], ["old"]]


def test_s_maxage_applies_per_item(upstream, clock):
    llmstash.cache = Cache(clock=clock)
    llmstash.embedding(**emb(upstream, ["aged"]))
    clock.advance(30)
    llmstash.embedding(**emb(upstream, ["recent"]))
    response = llmstash.embedding(**emb(upstream, ["aged", "recent"], cache={"s-maxage": 10}))
    assert sent_inputs(upstream)[-1] == ["aged"]
    assert facts(response) == (False, 1, 2)


def test_namespaces_apply_per_item(upstream):
    llmstash.cache = Cache(namespace="team")
    llmstash.embedding(**emb(upstream, ["spaced"]))
    llmstash.embedding(**emb(upstream, ["spaced"], cache={"namespace": "tenant-a"}))
    llmstash.embedding(**emb(upstream, ["spaced"], cache={"namespace": "tenant-a"}))
    llmstash.embedding(**emb(upstream, ["spaced"]))
    assert sent_inputs(upstream) == [["spaced"], ["spaced"]]


def test_caching_off_sends_the_input_as_given(upstream):
    llmstash.cache = Cache()
    response = llmstash.embedding(**emb(upstream, "as given", caching=False))
    assert upstream.calls[-1].body["input"] == "as given"
    assert response._hidden_params["cache_hit"] is False
    llmstash.embedding(**emb(upstream, "as given"))
    assert upstream.call_count("embeddings") == 2  # the uncached call stored nothing


# ----- failures -------------------------------------------------------------------------------------


class MiscountingUpstream(MockUpstream):
    """Answers an embedding request with one vector too few (or, with ``extra``, one too many)."""

    extra = False

    def answer(self, path: str, body: dict[str, Any], number: int) -> dict[str, Any]:
        answer = super().answer(path, body, number)
        if path.endswith("/embeddings"):
            if self.extra:
                answer["data"].append({"object": "embedding", "index": len(answer["data"]), "embedding": [0.0] * DIMS})
            else:
                answer["data"] = answer["data"][:-1]
        return answer


class ShufflingUpstream(MockUpstream):
    """Returns the embeddings in reverse order (each keeps its index, as the API allows)."""

    def answer(self, path: str, body: dict[str, Any], number: int) -> dict[str, Any]:
        answer = super().answer(path, body, number)
        if path.endswith("/embeddings"):
            answer["data"] = answer["data"][::-1]
        return answer


class Recorder(CustomLogger):
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any], Any]] = []

    def log_success_event(self, kwargs, response_obj, start_time, end_time):
        self.events.append(("success", kwargs, response_obj))

    def log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self.events.append(("failure", kwargs, response_obj))


@pytest.mark.parametrize("extra", [False, True])
def test_wrong_number_of_vectors_raises_api_error(extra):
    llmstash.cache = Cache()
    recorder = Recorder()
    llmstash.callbacks = [recorder]
    with MiscountingUpstream() as server:
        server.extra = extra
        with pytest.raises(llmstash.APIError) as caught:
            llmstash.embedding(**emb(server, ["one", "two", "three"]))
        assert "3 inputs" in str(caught.value)
        with pytest.raises(llmstash.APIError):
            asyncio.run(llmstash.aembedding(**emb(server, ["one", "two", "three"])))
        assert [kind for kind, _, _ in recorder.events] == ["failure", "failure"]
        assert llmstash.cache.stats()["writes"] == 0  # nothing of a wrong answer is stored
        assert server.call_count("embeddings") == 2


def test_vectors_are_matched_by_index_not_by_position():
    llmstash.cache = Cache()
    with ShufflingUpstream() as server:
        llmstash.embedding(**emb(server, ["p"]))
        response = llmstash.embedding(**emb(server, ["q", "p", "r", "s"]))
        assert sent_inputs(server)[-1] == ["q", "r", "s"]
        assert vectors(response) == expected(["q", "p", "r", "s"])
        again = llmstash.embedding(**emb(server, ["s", "r", "q"]))
        assert facts(again) == (True, 3, 3) and vectors(again) == expected(["s", "r", "q"])


def test_upstream_error_stores_nothing(upstream, cache):
    upstream.fail_next(500)
    with pytest.raises(llmstash.InternalServerError):
        llmstash.embedding(**emb(upstream, ["doomed", "also"]))
    response = llmstash.embedding(**emb(upstream, ["doomed", "also"]))
    assert facts(response) == (False, 0, 2)
    assert sent_inputs(upstream) == [["doomed", "also"], ["doomed", "also"]]


class BrokenStorage(Storage):
    """Every operation raises."""

    name = "broken"

    def __init__(self) -> None:
        self.calls = 0

    def _fail(self) -> None:
        self.calls += 1
        raise OSError("storage down")

    def get(self, key):
        self._fail()

    def set(self, key, value, ttl):
        self._fail()

    def delete(self, key):
        self._fail()

    def clear(self):
        self._fail()

    def close(self):
        self._fail()

    def get_many(self, keys):
        self._fail()

    def set_many(self, items, ttl):
        self._fail()

    async def aget(self, key):
        self._fail()

    async def aset(self, key, value, ttl):
        self._fail()

    async def adelete(self, key):
        self._fail()

    async def aget_many(self, keys):
        self._fail()

    async def aset_many(self, items, ttl):
        self._fail()


def test_broken_storage_still_answers_correctly(upstream):
    cache = Cache()
    broken = BrokenStorage()
    cache.storage = broken
    llmstash.cache = cache
    try:
        batch = ["one", "two", "one"]
        first = llmstash.embedding(**emb(upstream, batch))
        second = asyncio.run(llmstash.aembedding(**emb(upstream, batch)))
        for response in (first, second):
            check_shape(response, 3)
            assert vectors(response) == expected(batch)
            assert facts(response) == (False, 0, 3)
            assert response.usage.total_tokens == 2
        assert sent_inputs(upstream) == [["one", "two"], ["one", "two"]]
        assert broken.calls == 4  # one failed read and one failed write per call
        assert cache.stats()["errors"] == 4
    finally:
        llmstash.cache = None  # its close() would raise too


# ----- async ------------------------------------------------------------------------------------------


def test_async_batches(upstream, cache):
    async def scenario():
        first = await llmstash.aembedding(**emb(upstream, ["a1", "a2"]))
        partial = await llmstash.aembedding(**emb(upstream, ["a3", "a2", "a3", "a1", "a4"]))
        full = await llmstash.aembedding(**emb(upstream, ["a4", "a1"]))
        return first, partial, full

    first, partial, full = asyncio.run(scenario())
    assert sent_inputs(upstream) == [["a1", "a2"], ["a3", "a4"]]
    assert facts(first) == (False, 0, 2)
    check_shape(partial, 5)
    assert vectors(partial) == expected(["a3", "a2", "a3", "a1", "a4"])
    assert facts(partial) == (False, 2, 5)
    assert partial.usage.total_tokens == 2
    assert facts(full) == (True, 2, 2) and full.usage.total_tokens == 0
    assert vectors(full) == expected(["a4", "a1"])
    # shared with sync calls
    assert facts(llmstash.embedding(**emb(upstream, ["a2", "a3"]))) == (True, 2, 2)
    assert upstream.call_count("embeddings") == 2


def test_async_token_ids_and_controls(upstream, clock):
    llmstash.cache = Cache(clock=clock)

    async def scenario():
        await llmstash.aembedding(**emb(upstream, [5, 6, 7], cache={"ttl": 10}))
        kept = await llmstash.aembedding(**emb(upstream, [[5, 6, 7], [8]], cache={"no-store": True}))
        clock.advance(11)
        expired = await llmstash.aembedding(**emb(upstream, [[5, 6, 7]]))
        return kept, expired

    kept, expired = asyncio.run(scenario())
    assert facts(kept) == (False, 1, 2)
    assert facts(expired) == (False, 0, 1)
    assert sent_inputs(upstream) == [[[5, 6, 7]], [[8]], [[5, 6, 7]]]


def test_callbacks_see_one_event_per_batch(upstream):
    llmstash.cache = Cache()
    recorder = Recorder()
    llmstash.callbacks = [recorder]
    llmstash.embedding(**emb(upstream, ["cb1"]))
    llmstash.embedding(**emb(upstream, ["cb1", "cb2"]))
    llmstash.embedding(**emb(upstream, ["cb2", "cb1"]))
    assert [(kind, kwargs["cache_hit"]) for kind, kwargs, _ in recorder.events] == [
        ("success", False),
        ("success", False),
        ("success", True),
    ]
    assert recorder.events[1][1]["input"] == ["cb1", "cb2"]  # the caller's input, not what was sent


def test_stats_count_items(upstream):
    llmstash.cache = cache = Cache()
    llmstash.embedding(**emb(upstream, ["s1", "s2"]))
    llmstash.embedding(**emb(upstream, ["s1", "s2", "s3"]))
    stats = cache.stats()
    assert (stats["hits"], stats["misses"]) == (2, 3)
    assert stats["writes"] == 2  # one write per batch that sent items


# ----- the pure parts -------------------------------------------------------------------------------

keys_alphabet = st.sampled_from(["k0", "k1", "k2", "k3", "k4", "k5"])


def vector_of(key: str, source: str) -> list[float]:
    return [float(int(key[1:])), 1.0 if source == "cache" else 2.0]


@st.composite
def batches(draw):
    """(keys, cached): a batch of keys (with repeats) and which keys the cache holds."""
    keys = draw(st.lists(keys_alphabet, min_size=1, max_size=12))
    cached = draw(st.sets(keys_alphabet))
    return keys, cached


@settings(max_examples=200, deadline=None)
@given(batches())
def test_missing_items_are_the_distinct_uncached_items_in_first_seen_order(batch):
    keys, cached = batch
    items = [f"item-{key}" for key in keys]
    found = [{"embedding": vector_of(k, "cache")} if k in cached else None for k in keys]
    missing = missing_items(keys, items, found)
    expected_keys = list(dict.fromkeys(k for k in keys if k not in cached))
    assert [key for key, _ in missing] == expected_keys
    assert all(item == f"item-{key}" for key, item in missing)


@settings(max_examples=200, deadline=None)
@given(batches())
def test_merge_orders_items_by_the_caller_with_cached_or_fresh_vectors(batch):
    keys, cached = batch
    items = [f"item-{key}" for key in keys]
    found = [{"embedding": vector_of(k, "cache"), "model": "m"} if k in cached else None for k in keys]
    missing = missing_items(keys, items, found)
    body = {"model": "m", "data": [{"index": i, "embedding": vector_of(key, "fresh")} for i, (key, _) in enumerate(missing)]}
    random.Random(len(keys)).shuffle(body["data"])  # the upstream may answer in any order
    fresh = fresh_vectors(missing, body)
    merged = merge(keys, found, fresh)
    assert [item["index"] for item in merged] == list(range(len(keys)))
    assert all(item["object"] == "embedding" for item in merged)
    for key, item in zip(keys, merged, strict=True):
        assert item["embedding"] == vector_of(key, "cache" if key in cached else "fresh")


@given(batches(), st.integers(-2, 2).filter(lambda d: d != 0))
def test_fresh_vectors_refuses_a_miscount(batch, delta):
    keys, _ = batch
    missing = [(key, key) for key in dict.fromkeys(keys)]
    count = max(0, len(missing) + delta)
    if count == len(missing):
        return
    body = {"data": [{"index": i, "embedding": [0.0]} for i in range(count)]}
    with pytest.raises(ValueError):
        fresh_vectors(missing, body)


token_list = st.lists(st.integers(0, 100_000), min_size=1, max_size=5)


@pytest.mark.parametrize("empty", ["", [""], [[]], ["a", ""], [[1, True]]])
def test_split_refuses_empty_items_and_bool_tokens(empty):
    with pytest.raises(llmstash.ConfigurationError, match="non-empty"):
        split_input(empty)


@given(st.text(min_size=1, max_size=20))
def test_split_a_string(text):
    assert split_input(text) == [text]


@given(token_list)
def test_split_a_token_array(tokens):
    assert split_input(tokens) == [tokens]


@given(st.lists(st.one_of(st.text(min_size=1, max_size=10), token_list), min_size=1, max_size=8))
def test_split_a_list_of_items(items):
    assert split_input(items) == items
    assert split_input(items) is not items  # a copy: the caller's list is never changed


bad_scalars = st.one_of(
    st.none(), st.floats(allow_nan=False), st.booleans(), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)


@given(st.one_of(bad_scalars, st.lists(bad_scalars, min_size=1, max_size=4), st.just([]), st.integers()))
def test_split_refuses_anything_else(payload):
    with pytest.raises(llmstash.ConfigurationError):
        split_input(payload)
