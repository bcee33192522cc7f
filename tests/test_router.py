"""Router: deployments in turn, caching by model name and by caching group."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

import llmstash
from llmstash.caching import Cache
from llmstash.testing import MockUpstream

MESSAGES = [{"role": "user", "content": "Hello"}]


def hit(response) -> bool:
    return response._hidden_params["cache_hit"] is True


@pytest.fixture
def second_upstream() -> Iterator[MockUpstream]:
    with MockUpstream() as server:
        yield server


def make_router(a: MockUpstream, b: MockUpstream, **kwargs) -> llmstash.Router:
    return llmstash.Router(
        model_list=[
            {"model_name": "gpt-3.5", "litellm_params": {"model": "openai/gpt-3.5-turbo", "api_base": a.base_url}},
            {"model_name": "gpt-3.5", "litellm_params": {"model": "openai/gpt-3.5-turbo", "api_base": b.base_url}},
            {"model_name": "gpt-4", "litellm_params": {"model": "openai/gpt-4", "api_base": b.base_url}},
            {"model_name": "solo", "litellm_params": {"model": "openai/solo", "api_base": a.base_url}},
        ],
        **kwargs,
    )


def test_seed_example_caching_groups_share_entries(upstream, second_upstream):
    router = make_router(upstream, second_upstream, caching_groups=[("gpt-3.5", "gpt-4")], cache_responses=True)
    first = router.completion(model="gpt-3.5", messages=MESSAGES)
    second = router.completion(model="gpt-4", messages=MESSAGES)
    assert hit(second) and second.id == first.id
    assert upstream.call_count() + second_upstream.call_count() == 1


def test_models_outside_a_group_do_not_share(upstream, second_upstream):
    router = make_router(upstream, second_upstream, caching_groups=[("gpt-3.5", "gpt-4")], cache_responses=True)
    router.completion(model="gpt-3.5", messages=MESSAGES)
    solo = router.completion(model="solo", messages=MESSAGES)
    assert not hit(solo)


def test_without_groups_each_model_name_has_its_own_entries(upstream, second_upstream):
    router = make_router(upstream, second_upstream, cache_responses=True)
    router.completion(model="gpt-3.5", messages=MESSAGES)
    assert not hit(router.completion(model="gpt-4", messages=MESSAGES))
    assert hit(router.completion(model="gpt-4", messages=MESSAGES))


def test_deployments_of_one_name_are_chosen_in_turn_and_share_entries(upstream, second_upstream):
    router = make_router(upstream, second_upstream, cache_responses=True)
    for number in range(4):
        router.completion(model="gpt-3.5", messages=[{"role": "user", "content": f"q{number}"}])
    assert (upstream.call_count(), second_upstream.call_count()) == (2, 2)
    # the same prompt answered by deployment A is a hit when the turn is deployment B's
    again = [router.completion(model="gpt-3.5", messages=[{"role": "user", "content": "q0"}]) for _ in range(2)]
    assert all(hit(r) for r in again)


def test_async_and_embedding_calls(upstream, second_upstream):
    router = llmstash.Router(
        model_list=[
            {"model_name": "emb", "litellm_params": {"model": "openai/text-embedding-3-small", "api_base": upstream.base_url}}
        ],
        cache_responses=True,
    )
    first = asyncio.run(router.aembedding(model="emb", input=["a", "b"]))
    second = router.embedding(model="emb", input=["b", "a"])
    assert second._hidden_params["cached_items"] == 2
    assert second.data[0].embedding == first.data[1].embedding
    assert upstream.call_count() == 1


def test_router_without_its_own_cache_uses_the_active_one(upstream, second_upstream):
    llmstash.cache = Cache()
    router = make_router(upstream, second_upstream)
    router.completion(model="solo", messages=MESSAGES)
    assert hit(router.completion(model="solo", messages=MESSAGES))
    assert llmstash.cache.stats()["hits"] == 1


def test_cache_kwargs_configure_the_router_cache(upstream, second_upstream):
    router = make_router(upstream, second_upstream, cache_responses=True, cache_kwargs={"namespace": "router-ns"})
    answer = router.completion(model="solo", messages=MESSAGES)
    assert answer._hidden_params["cache_key"].startswith("router-ns:")


def test_os_environ_references_are_read_at_call_time(upstream, monkeypatch):
    monkeypatch.setenv("ROUTER_TEST_KEY", "sk-from-env")
    router = llmstash.Router(
        model_list=[
            {
                "model_name": "m",
                "litellm_params": {"model": "openai/m", "api_base": upstream.base_url, "api_key": "os.environ/ROUTER_TEST_KEY"},
            }
        ]
    )
    router.completion(model="m", messages=MESSAGES)
    assert upstream.calls[0].headers["authorization"] == "Bearer sk-from-env"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model_list": []}, "model_list must be a non-empty list"),
        ({"model_list": [{"model_name": "x"}]}, r"model_list\[0\] must look like"),
        (
            {"model_list": [{"model_name": "x", "litellm_params": {"model": "openai/x"}}], "caching_groups": [("x", "y")]},
            "'y', which is not a model_name",
        ),
        (
            {"model_list": [{"model_name": "x", "litellm_params": {"model": "openai/x"}}], "cache_kwargs": {"ttl": 1}},
            "cache_responses=True",
        ),
    ],
)
def test_bad_configuration_is_a_clear_error(kwargs, message):
    with pytest.raises(llmstash.ConfigurationError, match=message):
        llmstash.Router(**kwargs)


def test_unknown_model_name_is_a_clear_error(upstream, second_upstream):
    router = make_router(upstream, second_upstream)
    with pytest.raises(llmstash.ConfigurationError, match="not a model_name of this router"):
        router.completion(model="gpt-5", messages=MESSAGES)
