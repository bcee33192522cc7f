"""The examples of the seed documents (LiteLLM's caching docs), run against llmstash.

Each test follows one example as the docs write it, with ``import llmstash as litellm``, the
seed's model names and payloads, ``api_base=`` pointing at the local recording upstream, and a
local or disk backend where the seed uses Redis (not available in this release). Disk examples
use ``disk_cache_dir=tmp_path``. Time-based examples use the injected fake clock.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

import llmstash
import llmstash as litellm
from llmstash import completion, embedding
from llmstash.caching import Cache, CacheMode

JOKE = [{"role": "user", "content": "Tell me a joke."}]
WHO = [{"role": "user", "content": "hello who are you"}]
HELLO = [{"role": "user", "content": "Hello!"}]


def assert_same_answer(hit, miss):
    """``hit`` is a cached copy of ``miss``: same id, created and content."""
    assert miss._hidden_params["cache_hit"] is False
    assert hit._hidden_params["cache_hit"] is True
    assert hit.id == miss.id
    assert hit.created == miss.created
    assert hit.choices[0].message.content == miss.choices[0].message.content
    assert hit == miss  # "response1 == response2, response 1 is cached"


# ----- "import litellm" -----------------------------------------------------------------------


def test_import_llmstash_as_litellm_exposes_the_seed_names():
    # Every name the seed code reaches through `litellm.` or `from litellm... import`.
    from llmstash import Cache as TopLevelCache
    from llmstash import acompletion, completion
    from llmstash.caching import Cache as CachingCache
    from llmstash.caching import CacheMode as Mode
    from llmstash.caching import disable_cache
    from llmstash.integrations.custom_logger import CustomLogger

    assert litellm is llmstash
    assert TopLevelCache is CachingCache
    assert Mode.default_on.value == "default_on" and Mode.default_off.value == "default_off"
    assert callable(completion) and callable(acompletion) and callable(disable_cache)
    assert isinstance(CustomLogger(), CustomLogger)
    for name in ("completion", "acompletion", "embedding", "aembedding", "enable_cache", "disable_cache", "update_cache"):
        assert callable(getattr(litellm, name)), name
    assert litellm.cache is None  # no caching until a Cache is assigned
    assert litellm.callbacks == []


def test_assigning_litellm_cache_is_seen_by_names_imported_before(upstream):
    # `from litellm import completion` happens at import time; `litellm.cache = Cache()` later.
    litellm.cache = Cache()
    response1 = completion(model="gpt-3.5-turbo", messages=JOKE, api_base=upstream.base_url)
    response2 = litellm.completion(model="gpt-3.5-turbo", messages=JOKE, api_base=upstream.base_url)
    assert_same_answer(response2, response1)
    assert upstream.call_count("chat/completions") == 1


def test_without_a_cache_nothing_is_cached(upstream):
    response1 = completion(model="gpt-3.5-turbo", messages=JOKE, caching=True, api_base=upstream.base_url)
    response2 = completion(model="gpt-3.5-turbo", messages=JOKE, caching=True, api_base=upstream.base_url)
    assert response1._hidden_params["cache_hit"] is False
    assert response2._hidden_params["cache_hit"] is False
    assert response1.id != response2.id
    assert upstream.call_count("chat/completions") == 2


# ----- in-memory quick starts -----------------------------------------------------------------


def test_in_memory_quick_start_completion(upstream):
    litellm.cache = Cache()

    # Make completion calls
    response1 = completion(
        model="gpt-3.5-turbo", messages=[{"role": "user", "content": "Tell me a joke."}], caching=True, api_base=upstream.base_url
    )
    response2 = completion(
        model="gpt-3.5-turbo", messages=[{"role": "user", "content": "Tell me a joke."}], caching=True, api_base=upstream.base_url
    )

    assert_same_answer(response2, response1)
    assert upstream.call_count("chat/completions") == 1
    assert upstream.calls[0].body["model"] == "gpt-3.5-turbo"
    assert upstream.calls[0].body["messages"] == JOKE


def test_basic_in_memory_caching_without_caching_argument(upstream):
    # Seed: "First call hits the API" / "Second call returns cached response".
    litellm.cache = Cache()
    response = completion(model="gpt-3.5-turbo", messages=[{"role": "user", "content": "Hello!"}], api_base=upstream.base_url)
    first = response
    assert upstream.call_count("chat/completions") == 1
    response = completion(model="gpt-3.5-turbo", messages=[{"role": "user", "content": "Hello!"}], api_base=upstream.base_url)
    assert_same_answer(response, first)
    assert upstream.call_count("chat/completions") == 1


def test_a_different_message_is_a_different_entry(upstream):
    litellm.cache = Cache()
    joke = completion(model="gpt-3.5-turbo", messages=JOKE, caching=True, api_base=upstream.base_url)
    hello = completion(model="gpt-3.5-turbo", messages=HELLO, caching=True, api_base=upstream.base_url)
    other_model = completion(model="gpt-4", messages=JOKE, caching=True, api_base=upstream.base_url)
    assert hello._hidden_params["cache_hit"] is False
    assert other_model._hidden_params["cache_hit"] is False
    assert len({joke.id, hello.id, other_model.id}) == 3
    assert upstream.call_count("chat/completions") == 3


def test_embedding_quick_start(upstream):
    litellm.cache = Cache()

    start_time = time.time()
    embedding1 = embedding(
        model="text-embedding-ada-002", input=["hello from litellm" * 5], caching=True, api_base=upstream.base_url
    )
    end_time = time.time()
    assert end_time >= start_time

    embedding2 = embedding(
        model="text-embedding-ada-002", input=["hello from litellm" * 5], caching=True, api_base=upstream.base_url
    )

    assert embedding1._hidden_params["cache_hit"] is False
    assert embedding2._hidden_params["cache_hit"] is True
    assert embedding2.data[0].embedding == embedding1.data[0].embedding
    assert embedding2.model_dump()["data"] == embedding1.model_dump()["data"]
    assert embedding2.model == embedding1.model
    # a hit is not billed: usage reports what the upstream billed for this call
    assert embedding1.usage.total_tokens > 0 and embedding2.usage.total_tokens == 0
    assert upstream.call_count("embeddings") == 1
    assert upstream.calls[0].body["input"] == ["hello from litellm" * 5]


def test_monitoring_cache_hit_in_response_metadata(upstream):
    litellm.cache = Cache()
    response = completion(model="gpt-4", messages=[{"role": "user", "content": "Hello"}], api_base=upstream.base_url)
    assert response._hidden_params.get("cache_hit") is False
    response = completion(model="gpt-4", messages=[{"role": "user", "content": "Hello"}], api_base=upstream.base_url)
    assert response._hidden_params.get("cache_hit") is True
    assert upstream.call_count("chat/completions") == 1


# ----- disk cache -----------------------------------------------------------------------------


def test_disk_cache_quick_start(upstream, tmp_path):
    litellm.cache = Cache(type="disk", disk_cache_dir=tmp_path)

    response1 = completion(
        model="gpt-3.5-turbo", messages=[{"role": "user", "content": "Tell me a joke."}], caching=True, api_base=upstream.base_url
    )
    response2 = completion(
        model="gpt-3.5-turbo", messages=[{"role": "user", "content": "Tell me a joke."}], caching=True, api_base=upstream.base_url
    )

    assert_same_answer(response2, response1)
    assert upstream.call_count("chat/completions") == 1
    assert any(tmp_path.iterdir())  # the cache file lives in disk_cache_dir


def test_disk_cache_is_read_by_a_new_cache_on_the_same_directory(upstream, tmp_path):
    litellm.cache = Cache(type="disk", disk_cache_dir=tmp_path)
    response1 = completion(model="gpt-3.5-turbo", messages=JOKE, caching=True, api_base=upstream.base_url)
    litellm.cache.close()

    litellm.cache = Cache(type="disk", disk_cache_dir=tmp_path)
    response2 = completion(model="gpt-3.5-turbo", messages=JOKE, caching=True, api_base=upstream.base_url)
    assert_same_answer(response2, response1)
    assert upstream.call_count("chat/completions") == 1


SEED_DISK_SCRIPT = """
import json, sys
import llmstash as litellm
from llmstash import completion
from llmstash.caching import Cache
litellm.cache = Cache(type="disk", disk_cache_dir=sys.argv[1])

# Make completion calls
response1 = completion(
    model="gpt-3.5-turbo",
    messages=[{"role": "user", "content": "Tell me a joke."}],
    caching=True,
    api_base=sys.argv[2],
)
response2 = completion(
    model="gpt-3.5-turbo",
    messages=[{"role": "user", "content": "Tell me a joke."}],
    caching=True,
    api_base=sys.argv[2],
)
litellm.cache.close()
print(json.dumps([response1.id, response1._hidden_params["cache_hit"], response2.id, response2._hidden_params["cache_hit"]]))
"""


def test_disk_cache_running_the_code_two_times_uses_the_first_runs_file(upstream, tmp_path):
    # Seed: "If you run the code two times, response1 will use the cache from the first run".
    script = tmp_path / "seed_disk.py"
    script.write_text(SEED_DISK_SCRIPT)
    cache_dir = tmp_path / "cache"
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost"}

    def run() -> list:
        done = subprocess.run(
            [sys.executable, str(script), str(cache_dir), upstream.base_url],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    first_run = run()
    second_run = run()
    assert first_run[1:] == [False, first_run[0], True]
    assert second_run == [first_run[0], True, first_run[0], True]
    assert upstream.call_count("chat/completions") == 1


# ----- per-call cache controls ----------------------------------------------------------------


def test_no_cache_example_calls_the_endpoint_and_stores_the_fresh_answer(upstream):
    litellm.cache = Cache()
    stored = litellm.completion(model="gpt-3.5-turbo", messages=WHO, api_base=upstream.base_url)

    response = litellm.completion(
        model="gpt-3.5-turbo",
        messages=[{"role": "user", "content": "hello who are you"}],
        cache={"no-cache": True},
        api_base=upstream.base_url,
    )
    assert response._hidden_params["cache_hit"] is False
    assert response.id != stored.id
    assert upstream.call_count("chat/completions") == 2

    later = litellm.completion(model="gpt-3.5-turbo", messages=WHO, api_base=upstream.base_url)
    assert later._hidden_params["cache_hit"] is True
    assert later.id == response.id


def test_no_store_example_does_not_cache_the_response(upstream):
    litellm.cache = Cache()
    response = litellm.completion(
        model="gpt-3.5-turbo",
        messages=[{"role": "user", "content": "hello who are you"}],
        cache={"no-store": True},
        api_base=upstream.base_url,
    )
    assert response._hidden_params["cache_hit"] is False
    later = litellm.completion(model="gpt-3.5-turbo", messages=WHO, api_base=upstream.base_url)
    assert later._hidden_params["cache_hit"] is False
    assert later.id != response.id
    assert upstream.call_count("chat/completions") == 2


def test_ttl_example_caches_the_response_for_10_seconds(upstream, clock):
    litellm.cache = Cache(clock=clock)
    response = litellm.completion(
        model="gpt-3.5-turbo",
        messages=[{"role": "user", "content": "hello who are you"}],
        cache={"ttl": 10},
        api_base=upstream.base_url,
    )
    clock.advance(9.5)
    within = litellm.completion(model="gpt-3.5-turbo", messages=WHO, api_base=upstream.base_url)
    assert within._hidden_params["cache_hit"] is True and within.id == response.id
    clock.advance(0.5)  # 10 seconds after the write
    after = litellm.completion(model="gpt-3.5-turbo", messages=WHO, api_base=upstream.base_url)
    assert after._hidden_params["cache_hit"] is False and after.id != response.id
    assert upstream.call_count("chat/completions") == 2


def test_s_maxage_example_accepts_cached_responses_for_60_seconds(upstream, clock):
    litellm.cache = Cache(clock=clock)
    stored = litellm.completion(model="gpt-3.5-turbo", messages=WHO, api_base=upstream.base_url)
    clock.advance(60)
    response = litellm.completion(
        model="gpt-3.5-turbo",
        messages=[{"role": "user", "content": "hello who are you"}],
        cache={"s-maxage": 60},
        api_base=upstream.base_url,
    )
    assert response._hidden_params["cache_hit"] is True and response.id == stored.id
    clock.advance(1)  # 61 seconds old
    response = litellm.completion(model="gpt-3.5-turbo", messages=WHO, cache={"s-maxage": 60}, api_base=upstream.base_url)
    assert response._hidden_params["cache_hit"] is False and response.id != stored.id
    assert upstream.call_count("chat/completions") == 2


def test_cache_control_examples_with_gpt_4(upstream, clock):
    # Seed: ttl 7200 ("Cache for 2 hours"), s-maxage 600, namespace "production".
    litellm.cache = Cache(clock=clock)
    hello = [{"role": "user", "content": "Hello"}]
    first = completion(model="gpt-4", messages=hello, cache={"ttl": 7200}, api_base=upstream.base_url)
    clock.advance(599)
    young = completion(model="gpt-4", messages=hello, cache={"s-maxage": 600}, api_base=upstream.base_url)
    assert young._hidden_params["cache_hit"] is True and young.id == first.id
    clock.advance(7200 - 599 - 1)
    still = completion(model="gpt-4", messages=hello, api_base=upstream.base_url)
    assert still._hidden_params["cache_hit"] is True and still.id == first.id
    clock.advance(1)
    expired = completion(model="gpt-4", messages=hello, api_base=upstream.base_url)
    assert expired._hidden_params["cache_hit"] is False
    assert upstream.call_count("chat/completions") == 2

    production = completion(model="gpt-4", messages=hello, cache={"namespace": "production"}, api_base=upstream.base_url)
    assert production._hidden_params["cache_hit"] is False  # the namespace has its own entries
    assert production._hidden_params["cache_key"].startswith("production:")
    again = completion(model="gpt-4", messages=hello, cache={"namespace": "production"}, api_base=upstream.base_url)
    assert again._hidden_params["cache_hit"] is True and again.id == production.id
    assert upstream.call_count("chat/completions") == 3


def test_opt_in_caching_mode_example(upstream):
    litellm.cache = Cache(mode=CacheMode.default_off)
    hello = [{"role": "user", "content": "Hello"}]

    # This request is NOT cached
    response1 = completion(model="gpt-4", messages=hello, api_base=upstream.base_url)
    repeat1 = completion(model="gpt-4", messages=hello, api_base=upstream.base_url)
    assert response1._hidden_params["cache_hit"] is False and repeat1._hidden_params["cache_hit"] is False
    assert repeat1.id != response1.id
    assert upstream.call_count("chat/completions") == 2

    # This request IS cached (opt-in)
    response2 = completion(model="gpt-4", messages=hello, cache={"use-cache": True}, api_base=upstream.base_url)
    repeat2 = completion(model="gpt-4", messages=hello, cache={"use-cache": True}, api_base=upstream.base_url)
    assert response2._hidden_params["cache_hit"] is False
    assert_same_answer(repeat2, response2)
    assert upstream.call_count("chat/completions") == 3


# ----- custom cache keys ----------------------------------------------------------------------


# fmt: off
# this function takes in *args, **kwargs and returns the key you want to use for caching
def custom_get_cache_key(*args, **kwargs):
    # return key to use for your cache:
    key = kwargs.get("model", "") + str(kwargs.get("messages", "")) + str(kwargs.get("temperature", "")) + str(kwargs.get("logit_bias", ""))
    print("key for cache", key)
    return key
# fmt: on


def test_custom_cache_key_example(upstream, capsys):
    cache = Cache()  # the seed uses type="redis"; the key function is backend-independent
    cache.get_cache_key = custom_get_cache_key  # set get_cache_key function for your cache
    litellm.cache = cache  # set litellm.cache to your cache

    response1 = completion(model="gpt-3.5-turbo", messages=JOKE, temperature=0.7, api_base=upstream.base_url)
    expected_key = "gpt-3.5-turbo" + str(JOKE) + "0.7" + ""
    assert response1._hidden_params["cache_key"] == expected_key
    assert f"key for cache {expected_key}" in capsys.readouterr().out

    response2 = completion(model="gpt-3.5-turbo", messages=JOKE, temperature=0.7, api_base=upstream.base_url)
    assert_same_answer(response2, response1)
    assert response2._hidden_params["cache_key"] == expected_key
    assert upstream.call_count("chat/completions") == 1

    # The entry is stored under exactly the custom key.
    stored = cache.get_cache(cache_key=expected_key)
    assert stored is not None and stored.id == response1.id

    # The key changes with the temperature, so the answer does too.
    colder = completion(model="gpt-3.5-turbo", messages=JOKE, temperature=0.1, api_base=upstream.base_url)
    assert colder._hidden_params["cache_hit"] is False
    assert colder._hidden_params["cache_key"] == "gpt-3.5-turbo" + str(JOKE) + "0.1"
    assert upstream.call_count("chat/completions") == 2


def test_custom_cache_key_only_keys_what_it_returns(upstream):
    # The seed's key ignores everything but model, messages, temperature and logit_bias: a call
    # with another max_tokens is therefore a hit. That is the user's choice, and it is honoured.
    cache = Cache()
    cache.get_cache_key = custom_get_cache_key
    litellm.cache = cache
    response1 = completion(model="gpt-3.5-turbo", messages=JOKE, max_tokens=10, api_base=upstream.base_url)
    response2 = completion(model="gpt-3.5-turbo", messages=JOKE, max_tokens=99, api_base=upstream.base_url)
    assert_same_answer(response2, response1)
    assert upstream.call_count("chat/completions") == 1


# ----- custom add/get functions -----------------------------------------------------------------


def test_custom_add_and_get_cache_functions(upstream):
    # 1. Init Cache
    cache = Cache()
    store: dict = {}
    seen: list = []

    # 2. Define custom add/get cache functions
    def add_cache(self, result, *args, **kwargs):
        seen.append(("add", self, kwargs["cache_key"]))
        store[kwargs["cache_key"]] = result

    def get_cache(self, *args, **kwargs):
        seen.append(("get", self, kwargs["cache_key"]))
        return store.get(kwargs["cache_key"])

    # 3. Point cache add/get functions to your add/get functions
    cache.add_cache = add_cache
    cache.get_cache = get_cache
    litellm.cache = cache

    response1 = completion(model="gpt-3.5-turbo", messages=JOKE, api_base=upstream.base_url)
    response2 = completion(model="gpt-3.5-turbo", messages=JOKE, api_base=upstream.base_url)
    assert_same_answer(response2, response1)
    assert upstream.call_count("chat/completions") == 1

    key = response1._hidden_params["cache_key"]
    assert [op for op, _, _ in seen] == ["get", "add", "get"]
    assert all(self_arg is cache for _, self_arg, _ in seen)  # `self` is the Cache
    assert all(k == key for _, _, k in seen)
    assert list(store) == [key]
    assert len(cache.storage) == 0  # the built-in backend was not used

    # The async path uses the same functions.
    response3 = asyncio.run(litellm.acompletion(model="gpt-3.5-turbo", messages=JOKE, api_base=upstream.base_url))
    assert_same_answer(response3, response1)
    assert upstream.call_count("chat/completions") == 1


def test_custom_add_cache_receives_the_call_arguments(upstream):
    cache = Cache()
    received: dict = {}

    def add_cache(self, result, *args, **kwargs):
        received.update(kwargs, result=result)

    def get_cache(self, *args, **kwargs):
        return None

    cache.add_cache = add_cache
    cache.get_cache = get_cache
    litellm.cache = cache
    response = completion(model="gpt-3.5-turbo", messages=JOKE, temperature=0.3, api_base=upstream.base_url)
    assert received["model"] == "gpt-3.5-turbo"
    assert received["messages"] == JOKE
    assert received["temperature"] == 0.3
    assert received["result"].id == response.id
    again = completion(model="gpt-3.5-turbo", messages=JOKE, temperature=0.3, api_base=upstream.base_url)
    assert again._hidden_params["cache_hit"] is False  # get_cache said "nothing"
    assert upstream.call_count("chat/completions") == 2


# ----- custom key-value pairs -----------------------------------------------------------------


def test_custom_key_value_pairs():
    cache = Cache()

    cache.add_cache(cache_key="test-key", result="1234")

    assert cache.get_cache(cache_key="test-key") == "1234"
    assert cache.get_cache(cache_key="other-key") is None


def test_custom_key_value_pairs_async_and_json_values():
    cache = Cache()

    async def scenario():
        await cache.async_add_cache(cache_key="test-key", result={"n": [1, 2, 3]})
        return await cache.async_get_cache(cache_key="test-key")

    assert asyncio.run(scenario()) == {"n": [1, 2, 3]}
    assert cache.get_cache(cache_key="test-key") == {"n": [1, 2, 3]}


def test_custom_key_value_pair_with_ttl_expires(clock):
    cache = Cache(clock=clock)
    cache.add_cache(cache_key="test-key", result="1234", ttl=5)
    clock.advance(4.9)
    assert cache.get_cache(cache_key="test-key") == "1234"
    clock.advance(0.1)
    assert cache.get_cache(cache_key="test-key") is None


def test_add_cache_by_call_arguments_is_found_by_the_call(upstream, clock):
    # add_cache/get_cache without cache_key use the key of the call the kwargs describe; ttl=
    # sets the entry's lifetime and is not part of that key.
    cache = Cache(clock=clock)
    litellm.cache = cache
    call = dict(model="gpt-3.5-turbo", messages=JOKE, api_base=upstream.base_url)
    original = completion(**call, caching=False)  # not stored

    cache.add_cache(original, ttl=100, **call)
    assert cache.get_cache(**call).id == original.id

    hit = completion(**call)
    assert_same_answer(hit, original)
    assert upstream.call_count("chat/completions") == 1
    clock.advance(100)
    assert cache.get_cache(**call) is None


# ----- enable / disable / update --------------------------------------------------------------


def test_enable_cache_quick_start(upstream):
    litellm.enable_cache()
    assert isinstance(litellm.cache, Cache)
    assert litellm.cache.type == "local"
    response1 = completion(model="gpt-3.5-turbo", messages=JOKE, api_base=upstream.base_url)
    response2 = completion(model="gpt-3.5-turbo", messages=JOKE, api_base=upstream.base_url)
    assert_same_answer(response2, response1)
    assert upstream.call_count("chat/completions") == 1


def test_enable_cache_advanced_params(upstream):
    cache = litellm.enable_cache(
        type="local",
        supported_call_types=["completion", "acompletion", "embedding", "aembedding", "atranscription", "transcription"],
    )
    assert litellm.cache is cache
    completion(model="gpt-3.5-turbo", messages=JOKE, api_base=upstream.base_url)
    assert completion(model="gpt-3.5-turbo", messages=JOKE, api_base=upstream.base_url)._hidden_params["cache_hit"] is True
    # text_completion is not in the seed's list, so it is not cached.
    litellm.text_completion(model="gpt-3.5-turbo-instruct", prompt="Tell me a joke.", api_base=upstream.base_url)
    second = litellm.text_completion(model="gpt-3.5-turbo-instruct", prompt="Tell me a joke.", api_base=upstream.base_url)
    assert second._hidden_params["cache_hit"] is False
    assert upstream.call_count("chat/completions") == 1
    assert upstream.call_count("/completions") - upstream.call_count("chat/completions") == 2


def test_disable_cache_switches_caching_off(upstream):
    litellm.enable_cache()
    completion(model="gpt-3.5-turbo", messages=JOKE, api_base=upstream.base_url)

    litellm.disable_cache()
    assert litellm.cache is None
    response = completion(model="gpt-3.5-turbo", messages=JOKE, api_base=upstream.base_url)
    assert response._hidden_params["cache_hit"] is False
    assert response._hidden_params["cache_key"] is None
    assert upstream.call_count("chat/completions") == 2


def test_disable_cache_from_litellm_caching_and_setting_none(upstream):
    from llmstash.caching import disable_cache

    litellm.cache = Cache()
    completion(model="gpt-3.5-turbo", messages=JOKE, api_base=upstream.base_url)
    # Disable caching globally
    disable_cache()
    assert litellm.cache is None
    completion(model="gpt-3.5-turbo", messages=JOKE, api_base=upstream.base_url)
    assert upstream.call_count("chat/completions") == 2

    litellm.cache = Cache()
    completion(model="gpt-3.5-turbo", messages=JOKE, api_base=upstream.base_url)
    # Or set to None
    litellm.cache = None
    response = completion(model="gpt-3.5-turbo", messages=JOKE, api_base=upstream.base_url)
    assert response._hidden_params["cache_hit"] is False
    assert upstream.call_count("chat/completions") == 4


def test_update_cache_replaces_and_closes_the_active_cache(upstream, tmp_path):
    old = litellm.enable_cache(type="disk", disk_cache_dir=tmp_path / "old")
    completion(model="gpt-3.5-turbo", messages=JOKE, api_base=upstream.base_url)
    assert old.storage._db is not None  # opened by the call

    new = litellm.update_cache(type="disk", disk_cache_dir=tmp_path / "new")
    assert litellm.cache is new and new is not old
    assert old.storage._db is None  # the old cache was closed
    response = completion(model="gpt-3.5-turbo", messages=JOKE, api_base=upstream.base_url)
    assert response._hidden_params["cache_hit"] is False  # a new, empty directory
    again = completion(model="gpt-3.5-turbo", messages=JOKE, api_base=upstream.base_url)
    assert_same_answer(again, response)
    assert upstream.call_count("chat/completions") == 2

    local = litellm.update_cache()
    assert litellm.cache is local and local.type == "local"


# ----- the Cache initialization example (local backend) ---------------------------------------


def test_cache_initialization_parameters_example(upstream, clock):
    litellm.cache = Cache(
        ttl=3600,  # Time to live in seconds
        namespace="litellm",  # Cache key namespace
        mode="default_on",  # Cache mode: "default_on" or "default_off"
        supported_call_types=["completion", "acompletion", "embedding", "aembedding", "transcription", "atranscription"],
        clock=clock,
    )
    response1 = completion(
        model="gpt-4", messages=[{"role": "user", "content": "Explain quantum computing"}], api_base=upstream.base_url
    )
    assert response1._hidden_params["cache_key"].startswith("litellm:")
    clock.advance(3599)
    response2 = completion(
        model="gpt-4", messages=[{"role": "user", "content": "Explain quantum computing"}], api_base=upstream.base_url
    )
    assert_same_answer(response2, response1)
    clock.advance(1)
    response3 = completion(
        model="gpt-4", messages=[{"role": "user", "content": "Explain quantum computing"}], api_base=upstream.base_url
    )
    assert response3._hidden_params["cache_hit"] is False
    assert upstream.call_count("chat/completions") == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(
            type="redis-semantic",
            host="localhost",
            port=6379,
            password="password",
            similarity_threshold=0.8,
            redis_semantic_cache_embedding_model="text-embedding-ada-002",
        ),
        dict(type="dual-semantic", host="localhost", port=6379, password="password", similarity_threshold=0.8),
        dict(type="qdrant-semantic", qdrant_api_base="http://localhost:6333", similarity_threshold=0.8),
    ],
    ids=lambda kwargs: kwargs["type"],
)
def test_seed_semantic_backends_construct_without_io(kwargs):
    # end-to-end behaviour of the semantic types: tests/test_semantic.py
    cache = Cache(**kwargs)
    assert cache.semantic is not None and cache.semantic.threshold == 0.8
    cache.close()


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(type="s3", s3_bucket_name="cache-bucket-litellm", s3_region_name="us-west-2"),
        dict(
            type="s3",
            s3_bucket_name="litellm-cache",
            s3_region_name="us-west-2",
            s3_aws_access_key_id="your-access-key",
            s3_aws_secret_access_key="your-secret-key",
            s3_path="cache/",
        ),
        dict(type="gcs", gcs_bucket_name="litellm-cache", gcs_path="cache/"),
        dict(
            type="azure_blob", azure_account_url="https://myaccount.blob.core.windows.net", azure_blob_container="litellm-cache"
        ),
    ],
    ids=lambda kwargs: kwargs["type"],
)
def test_seed_object_store_configurations_are_accepted(kwargs):
    """The seeds' S3/GCS/Azure examples build a cache (no I/O until the first call; the calls
    themselves are tested against emulators in test_object_stores.py)."""
    cache = Cache(**kwargs)
    assert cache.type == kwargs["type"]
    assert "your-secret-key" not in repr(cache.storage)
    if "s3_path" in kwargs or "gcs_path" in kwargs:
        assert cache.storage.prefix == "cache/llmstash/"


# ----- logging: kwargs["cache_hit"] -----------------------------------------------------------


def test_logging_example_async_azure_caching(upstream):
    from llmstash import Cache, acompletion  # noqa: F401 - the seed's import line
    from llmstash.integrations.custom_logger import CustomLogger

    # create custom callback for success_events
    class MyCustomHandler(CustomLogger):
        def __init__(self):
            self.states = []

        async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
            self.states.append(kwargs["cache_hit"])
            assert response_obj._hidden_params["cache_hit"] is kwargs["cache_hit"]
            assert end_time >= start_time

    async def test_async_completion_azure_caching():
        # set custom callback
        customHandler_caching = MyCustomHandler()
        litellm.callbacks = [customHandler_caching]

        # init cache
        litellm.cache = Cache()
        unique_time = time.time()
        response1 = await litellm.acompletion(
            model="azure/chatgpt-v-2",
            messages=[{"role": "user", "content": f"Hi 👋 - i'm async azure {unique_time}"}],
            caching=True,
            api_base=upstream.azure_base,
            api_key="azure-test-key",
        )
        assert customHandler_caching.states == [False]
        response2 = await litellm.acompletion(
            model="azure/chatgpt-v-2",
            messages=[{"role": "user", "content": f"Hi 👋 - i'm async azure {unique_time}"}],
            caching=True,
            api_base=upstream.azure_base,
            api_key="azure-test-key",
        )
        return customHandler_caching, response1, response2

    handler, response1, response2 = asyncio.run(test_async_completion_azure_caching())
    assert handler.states == [False, True]
    assert_same_answer(response2, response1)
    assert upstream.call_count("chat/completions") == 1
    assert upstream.calls[0].path.startswith("/openai/deployments/chatgpt-v-2/chat/completions?api-version=")
