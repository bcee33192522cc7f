"""Per-call cache controls, cache modes, TTLs, namespaces, call types, and bad configuration.

The semantics under test are those of ``llmstash._core.policy`` (and README "Cache controls,
exactly"). Time is the injected fake clock; nothing sleeps.
"""

from __future__ import annotations

import asyncio

import pytest

import llmstash
from llmstash import ConfigurationError
from llmstash.caching import CALL_TYPES, Cache, CacheMode

MODEL = "gpt-3.5-turbo"
CONTROL_NAMES = ("no-cache", "no-store", "ttl", "s-maxage", "namespace", "use-cache")


def messages(text: str = "hello who are you") -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def call(upstream, text: str = "hello who are you", **kwargs):
    return llmstash.completion(model=MODEL, messages=messages(text), api_base=upstream.base_url, **kwargs)


def acall(upstream, text: str = "hello who are you", **kwargs):
    return asyncio.run(llmstash.acompletion(model=MODEL, messages=messages(text), api_base=upstream.base_url, **kwargs))


CALLERS = {"sync": call, "async": acall}


def hit(response) -> bool:
    return response._hidden_params["cache_hit"]


def chat_calls(upstream) -> int:
    return upstream.call_count("chat/completions")


# ----- caching=False / use-cache: False ------------------------------------------------------


@pytest.mark.parametrize("off", [{"caching": False}, {"cache": {"use-cache": False}}], ids=["caching=False", "use-cache=False"])
def test_switched_off_call_does_not_read(upstream, off):
    llmstash.cache = Cache()
    stored = call(upstream)
    bypass = call(upstream, **off)
    assert not hit(bypass) and bypass.id != stored.id
    assert bypass._hidden_params["cache_key"] is None
    assert chat_calls(upstream) == 2
    # ...and did not write: the stored entry is still the first answer.
    later = call(upstream)
    assert hit(later) and later.id == stored.id
    assert chat_calls(upstream) == 2


@pytest.mark.parametrize("off", [{"caching": False}, {"cache": {"use-cache": False}}], ids=["caching=False", "use-cache=False"])
def test_switched_off_call_does_not_write(upstream, off):
    llmstash.cache = Cache()
    first = call(upstream, **off)
    later = call(upstream)
    assert not hit(first) and not hit(later)
    assert later.id != first.id
    assert chat_calls(upstream) == 2
    assert llmstash.cache.stats()["writes"] == 1  # only the normal call wrote


@pytest.mark.parametrize("off", [{"caching": False}, {"cache": {"use-cache": False}}], ids=["caching=False", "use-cache=False"])
def test_switched_off_async_call_neither_reads_nor_writes(upstream, off):
    llmstash.cache = Cache()
    bypass = acall(upstream, **off)
    stored = acall(upstream)
    bypass2 = acall(upstream, **off)
    assert not hit(bypass) and not hit(stored) and not hit(bypass2)
    assert hit(acall(upstream))
    assert chat_calls(upstream) == 3


def test_an_explicit_false_wins_over_an_explicit_true(upstream):
    llmstash.cache = Cache()
    call(upstream)
    a = call(upstream, caching=False, cache={"use-cache": True})
    b = call(upstream, caching=True, cache={"use-cache": False})
    assert not hit(a) and not hit(b)
    assert chat_calls(upstream) == 3


# ----- no-cache / no-store ----------------------------------------------------------------------


@pytest.mark.parametrize("caller", CALLERS.values(), ids=CALLERS.keys())
def test_no_cache_skips_the_read_and_stores_the_fresh_answer(upstream, caller):
    llmstash.cache = Cache()
    old = caller(upstream)
    fresh = caller(upstream, cache={"no-cache": True})
    assert not hit(fresh) and fresh.id != old.id
    assert chat_calls(upstream) == 2
    later = caller(upstream)
    assert hit(later) and later.id == fresh.id  # the NEW answer replaced the entry
    assert chat_calls(upstream) == 2


def test_no_cache_on_an_empty_cache_stores(upstream):
    llmstash.cache = Cache()
    fresh = call(upstream, cache={"no-cache": True})
    later = call(upstream)
    assert hit(later) and later.id == fresh.id
    assert chat_calls(upstream) == 1


@pytest.mark.parametrize("caller", CALLERS.values(), ids=CALLERS.keys())
def test_no_store_reads_but_does_not_write(upstream, caller):
    llmstash.cache = Cache()
    unstored = caller(upstream, cache={"no-store": True})
    assert not hit(unstored)
    stored = caller(upstream)
    assert not hit(stored) and stored.id != unstored.id  # the no-store answer was not kept
    read = caller(upstream, cache={"no-store": True})
    assert hit(read) and read.id == stored.id  # no-store still reads
    assert chat_calls(upstream) == 2


def test_no_store_miss_leaves_an_existing_entry_alone(upstream, clock):
    llmstash.cache = Cache(clock=clock)
    stored = call(upstream)
    clock.advance(100)
    # too old for this call: a miss, and the fresh answer is not stored
    fresh = call(upstream, cache={"no-store": True, "s-maxage": 10})
    assert not hit(fresh) and fresh.id != stored.id
    later = call(upstream)
    assert hit(later) and later.id == stored.id
    assert chat_calls(upstream) == 2


def test_no_cache_with_no_store_bypasses_both(upstream):
    llmstash.cache = Cache()
    stored = call(upstream)
    bypass = call(upstream, cache={"no-cache": True, "no-store": True})
    assert not hit(bypass) and bypass.id != stored.id
    later = call(upstream)
    assert hit(later) and later.id == stored.id
    assert chat_calls(upstream) == 2


def test_false_valued_controls_change_nothing(upstream):
    llmstash.cache = Cache()
    stored = call(upstream, cache={"no-cache": False, "no-store": False})
    again = call(upstream, cache={"no-cache": False, "no-store": False, "ttl": None, "s-maxage": None, "namespace": None})
    assert hit(again) and again.id == stored.id
    assert chat_calls(upstream) == 1


# ----- ttl ------------------------------------------------------------------------------------


@pytest.mark.parametrize("caller", CALLERS.values(), ids=CALLERS.keys())
def test_per_call_ttl(upstream, clock, caller):
    llmstash.cache = Cache(clock=clock)
    stored = caller(upstream, cache={"ttl": 10})
    clock.advance(9.999)
    assert hit(caller(upstream))
    clock.advance(0.001)  # exactly 10 s: expired
    fresh = caller(upstream)
    assert not hit(fresh) and fresh.id != stored.id
    clock.advance(10_000)  # the fresh answer was stored without a ttl
    later = caller(upstream)
    assert hit(later) and later.id == fresh.id
    assert chat_calls(upstream) == 2


def test_ttl_zero_is_not_kept(upstream):
    llmstash.cache = Cache()
    call(upstream, cache={"ttl": 0})
    again = call(upstream)
    assert not hit(again)
    assert chat_calls(upstream) == 2
    assert len(llmstash.cache.storage) == 1  # only the second answer


def test_cache_ttl(upstream, clock):
    llmstash.cache = Cache(ttl=60, clock=clock)
    stored = call(upstream)
    clock.advance(59)
    assert hit(call(upstream))
    clock.advance(1)
    fresh = call(upstream)
    assert not hit(fresh) and fresh.id != stored.id
    assert chat_calls(upstream) == 2


def test_default_in_memory_ttl(upstream, clock):
    cache = Cache(default_in_memory_ttl=30, clock=clock)
    assert cache.ttl == 30
    llmstash.cache = cache
    call(upstream)
    clock.advance(29)
    assert hit(call(upstream))
    clock.advance(1)
    assert not hit(call(upstream))
    assert chat_calls(upstream) == 2


def test_ttl_takes_precedence_over_default_in_memory_ttl(upstream, clock):
    llmstash.cache = Cache(ttl=100, default_in_memory_ttl=10, clock=clock)
    call(upstream)
    clock.advance(50)
    assert hit(call(upstream))
    assert chat_calls(upstream) == 1


def test_no_ttl_means_no_expiry(upstream, clock):
    llmstash.cache = Cache(clock=clock)
    stored = call(upstream)
    clock.advance(10 * 365 * 24 * 3600)
    later = call(upstream)
    assert hit(later) and later.id == stored.id


@pytest.mark.parametrize(
    ("cache_ttl", "call_ttl", "age", "expect_hit"), [(5, 100, 50, True), (100, 5, 5, False), (100, 5, 4, True)]
)
def test_per_call_ttl_overrides_cache_ttl(upstream, clock, cache_ttl, call_ttl, age, expect_hit):
    llmstash.cache = Cache(ttl=cache_ttl, clock=clock)
    call(upstream, cache={"ttl": call_ttl})
    clock.advance(age)
    assert hit(call(upstream)) is expect_hit


def test_ttl_on_disk_follows_the_injected_clock(upstream, clock, tmp_path):
    llmstash.cache = Cache(type="disk", disk_cache_dir=tmp_path, ttl=10, clock=clock)
    call(upstream)
    clock.advance(9)
    assert hit(call(upstream))
    clock.advance(1)
    assert not hit(call(upstream))
    assert chat_calls(upstream) == 2


def test_default_in_memory_ttl_does_not_apply_to_disk(tmp_path):
    with pytest.raises(ConfigurationError) as info:
        Cache(type="disk", disk_cache_dir=tmp_path, default_in_memory_ttl=10)
    assert "default_in_memory_ttl" in str(info.value)
    assert "'local'" in str(info.value)


# ----- s-maxage -------------------------------------------------------------------------------


@pytest.mark.parametrize("caller", CALLERS.values(), ids=CALLERS.keys())
def test_s_maxage_serves_young_entries_only(upstream, clock, caller):
    llmstash.cache = Cache(clock=clock)
    stored = caller(upstream)
    clock.advance(30)
    young_enough = caller(upstream, cache={"s-maxage": 60})
    assert hit(young_enough) and young_enough.id == stored.id
    exactly = caller(upstream, cache={"s-maxage": 30})
    assert hit(exactly) and exactly.id == stored.id
    too_old = caller(upstream, cache={"s-maxage": 29})
    assert not hit(too_old) and too_old.id != stored.id
    assert chat_calls(upstream) == 2
    # The miss stored its fresh answer, which is young enough now.
    refreshed = caller(upstream, cache={"s-maxage": 29})
    assert hit(refreshed) and refreshed.id == too_old.id
    assert chat_calls(upstream) == 2


@pytest.mark.parametrize("caller", CALLERS.values(), ids=CALLERS.keys())
def test_s_maxage_zero(upstream, clock, caller):
    llmstash.cache = Cache(clock=clock)
    stored = caller(upstream)
    same_instant = caller(upstream, cache={"s-maxage": 0})
    assert hit(same_instant) and same_instant.id == stored.id
    clock.advance(0.001)
    later = caller(upstream, cache={"s-maxage": 0})
    assert not hit(later) and later.id != stored.id
    assert chat_calls(upstream) == 2


def test_s_maxage_does_not_affect_other_calls(upstream, clock):
    llmstash.cache = Cache(clock=clock)
    stored = call(upstream)
    clock.advance(100)
    plain = call(upstream)  # no s-maxage: any age is fine
    assert hit(plain) and plain.id == stored.id


def test_s_maxage_on_disk(upstream, clock, tmp_path):
    llmstash.cache = Cache(type="disk", disk_cache_dir=tmp_path, clock=clock)
    stored = call(upstream)
    clock.advance(10)
    assert hit(call(upstream, cache={"s-maxage": 10}))
    clock.advance(1)
    fresh = call(upstream, cache={"s-maxage": 10})
    assert not hit(fresh) and fresh.id != stored.id


# ----- namespaces -----------------------------------------------------------------------------


def test_cache_and_call_namespaces_nest(upstream):
    llmstash.cache = Cache(namespace="prod")
    tenant_a = call(upstream, cache={"namespace": "tenant-a"})
    key = tenant_a._hidden_params["cache_key"]
    prefix, _, digest = key.rpartition(":")
    assert prefix == "prod:tenant-a"
    assert len(digest) == 64 and int(digest, 16) >= 0

    plain = call(upstream)
    assert plain._hidden_params["cache_key"] == f"prod:{digest}"
    assert not hit(plain)
    tenant_b = call(upstream, cache={"namespace": "tenant-b"})
    assert tenant_b._hidden_params["cache_key"] == f"prod:tenant-b:{digest}"
    assert not hit(tenant_b)
    assert chat_calls(upstream) == 3

    again_a = call(upstream, cache={"namespace": "tenant-a"})
    assert hit(again_a) and again_a.id == tenant_a.id
    again_b = call(upstream, cache={"namespace": "tenant-b"})
    assert hit(again_b) and again_b.id == tenant_b.id
    assert chat_calls(upstream) == 3


def test_cache_namespaces_on_a_shared_directory_do_not_share(upstream, tmp_path):
    llmstash.cache = Cache(type="disk", disk_cache_dir=tmp_path, namespace="blue")
    blue = call(upstream)
    llmstash.cache.close()

    llmstash.cache = Cache(type="disk", disk_cache_dir=tmp_path, namespace="green")
    green = call(upstream)
    assert not hit(green) and green.id != blue.id
    llmstash.cache.close()

    llmstash.cache = Cache(type="disk", disk_cache_dir=tmp_path)
    plain = call(upstream)
    assert not hit(plain)
    llmstash.cache.close()

    llmstash.cache = Cache(type="disk", disk_cache_dir=tmp_path, namespace="blue")
    blue_again = call(upstream)
    assert hit(blue_again) and blue_again.id == blue.id
    assert chat_calls(upstream) == 3


def test_get_cache_key_includes_the_namespaces(upstream):
    cache = Cache(namespace="prod")
    kwargs = dict(model=MODEL, messages=messages(), api_base=upstream.base_url)
    assert cache.get_cache_key(**kwargs).startswith("prod:")
    assert cache.get_cache_key(**kwargs, cache={"namespace": "t"}).startswith("prod:t:")
    llmstash.cache = cache
    response = call(upstream, cache={"namespace": "t"})
    assert response._hidden_params["cache_key"] == cache.get_cache_key(**kwargs, cache={"namespace": "t"})


# ----- supported_call_types -------------------------------------------------------------------


def test_excluded_call_types_are_not_cached(upstream):
    llmstash.cache = Cache(supported_call_types=["completion", "embedding"])
    stored = call(upstream)
    assert hit(call(upstream))

    # acompletion is excluded: it neither reads the sync call's entry nor writes its own.
    async_one = acall(upstream)
    async_two = acall(upstream)
    assert not hit(async_one) and not hit(async_two)
    assert async_one._hidden_params["cache_key"] is None
    assert len({stored.id, async_one.id, async_two.id}) == 3
    assert chat_calls(upstream) == 3

    embed = dict(model="text-embedding-ada-002", input=["hello"], api_base=upstream.base_url)
    llmstash.embedding(**embed)
    assert hit(llmstash.embedding(**embed))
    assert not hit(asyncio.run(llmstash.aembedding(**embed)))
    assert upstream.call_count("embeddings") == 2

    text = dict(model="gpt-3.5-turbo-instruct", prompt="hello", api_base=upstream.base_url)
    llmstash.text_completion(**text)
    assert not hit(llmstash.text_completion(**text))
    assert upstream.call_count("/v1/completions") == 2


def test_excluded_call_type_is_not_cached_even_with_caching_true(upstream):
    llmstash.cache = Cache(supported_call_types=["completion"])
    first = acall(upstream, caching=True)
    second = acall(upstream, caching=True)
    assert not hit(first) and not hit(second)
    assert chat_calls(upstream) == 2


def test_empty_supported_call_types_caches_nothing(upstream):
    llmstash.cache = Cache(supported_call_types=[])
    call(upstream)
    assert not hit(call(upstream))
    assert chat_calls(upstream) == 2


# ----- modes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [CacheMode.default_off, "default_off"])
def test_default_off_caches_only_when_asked(upstream, mode):
    llmstash.cache = Cache(mode=mode)
    assert llmstash.cache.mode is CacheMode.default_off
    plain1 = call(upstream)
    plain2 = call(upstream)
    assert not hit(plain1) and not hit(plain2)
    assert plain1._hidden_params["cache_key"] is None
    assert chat_calls(upstream) == 2

    opted = call(upstream, caching=True)
    assert not hit(opted)  # the plain calls stored nothing
    via_control = call(upstream, cache={"use-cache": True})
    assert hit(via_control) and via_control.id == opted.id  # one key for both ways of opting in
    via_async = acall(upstream, caching=True)
    assert hit(via_async) and via_async.id == opted.id

    plain3 = call(upstream)
    assert not hit(plain3)  # still not read without opting in
    assert chat_calls(upstream) == 4


def test_default_off_ignores_other_controls_without_opt_in(upstream):
    llmstash.cache = Cache(mode="default_off")
    call(upstream, cache={"no-cache": True, "ttl": 60})
    assert not hit(call(upstream, caching=True))
    assert chat_calls(upstream) == 2


def test_default_off_opt_in_still_honours_controls(upstream, clock):
    llmstash.cache = Cache(mode="default_off", clock=clock)
    stored = call(upstream, cache={"use-cache": True, "ttl": 10})
    clock.advance(5)
    assert hit(call(upstream, caching=True))
    no_cache = call(upstream, cache={"use-cache": True, "no-cache": True})
    assert not hit(no_cache) and no_cache.id != stored.id
    clock.advance(100)  # the no-cache answer was stored without ttl
    later = call(upstream, caching=True)
    assert hit(later) and later.id == no_cache.id


def test_default_on_is_the_default(upstream):
    cache = Cache()
    assert cache.mode is CacheMode.default_on
    assert Cache(mode="default_on").mode is CacheMode.default_on
    llmstash.cache = cache
    call(upstream)
    assert hit(call(upstream))


# ----- bad input ------------------------------------------------------------------------------


def assert_config_error(excinfo, *fragments: str) -> str:
    message = str(excinfo.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def test_configuration_error_is_a_value_error():
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(ConfigurationError, llmstash.exceptions.LlmstashError)


@pytest.mark.parametrize("name", ["no_cache", "ttL", "max-age", "use_cache", "nocache"])
def test_unknown_cache_control(upstream, name):
    llmstash.cache = Cache()
    with pytest.raises(ConfigurationError) as info:
        call(upstream, cache={name: True})
    assert_config_error(info, repr(name), *CONTROL_NAMES)
    assert chat_calls(upstream) == 0


def test_unknown_cache_control_is_rejected_without_an_active_cache(upstream):
    with pytest.raises(ConfigurationError) as info:
        call(upstream, cache={"no_store": True})
    assert_config_error(info, "'no_store'", "no-store")
    assert chat_calls(upstream) == 0


@pytest.mark.parametrize("value", ["no-cache", ["no-cache"], True, 10])
def test_cache_argument_must_be_a_dict(upstream, value):
    llmstash.cache = Cache()
    with pytest.raises(ConfigurationError) as info:
        call(upstream, cache=value)
    assert_config_error(info, "cache=", "dict", *CONTROL_NAMES)
    assert chat_calls(upstream) == 0


@pytest.mark.parametrize(
    ("controls", "fragments"),
    [
        ({"no-cache": "yes"}, ('"no-cache"', "True or False", "'yes'")),
        ({"no-store": 1}, ('"no-store"', "True or False")),
        ({"use-cache": "true"}, ('"use-cache"', "True or False")),
        ({"no-cache": None}, ('"no-cache"', "True or False")),
        ({"ttl": "10"}, ('"ttl"', "number of seconds", "'10'")),
        ({"ttl": True}, ('"ttl"', "number of seconds")),
        ({"ttl": float("nan")}, ('"ttl"', "number of seconds")),
        ({"s-maxage": [60]}, ('"s-maxage"', "number of seconds")),
        ({"namespace": 5}, ('"namespace"', "non-empty string")),
        ({"namespace": ""}, ('"namespace"', "non-empty string")),
    ],
)
def test_wrong_control_types(upstream, controls, fragments):
    llmstash.cache = Cache()
    with pytest.raises(ConfigurationError) as info:
        call(upstream, cache=controls)
    assert_config_error(info, *fragments)
    assert chat_calls(upstream) == 0


@pytest.mark.parametrize("caller", CALLERS.values(), ids=CALLERS.keys())
@pytest.mark.parametrize("name", ["ttl", "s-maxage"])
def test_negative_seconds_in_controls(upstream, caller, name):
    llmstash.cache = Cache()
    with pytest.raises(ConfigurationError) as info:
        caller(upstream, cache={name: -1})
    assert_config_error(info, f'"{name}"', ">= 0", "-1")
    assert chat_calls(upstream) == 0


@pytest.mark.parametrize("name", ["ttl", "default_in_memory_ttl"])
def test_negative_cache_ttl(name):
    with pytest.raises(ConfigurationError) as info:
        Cache(**{name: -5})
    assert_config_error(info, name, ">= 0", "-5")


@pytest.mark.parametrize("value", ["60", [1], True])
def test_wrong_cache_ttl_type(value):
    with pytest.raises(ConfigurationError) as info:
        Cache(ttl=value)
    assert_config_error(info, "ttl", "number of seconds")


@pytest.mark.parametrize("value", ["yes", 1, "True"])
def test_caching_argument_must_be_a_bool(upstream, value):
    llmstash.cache = Cache()
    with pytest.raises(ConfigurationError) as info:
        call(upstream, caching=value)
    assert_config_error(info, "caching", "True", "False")
    assert chat_calls(upstream) == 0


@pytest.mark.parametrize("type_name", ["memory", "Local", "sqlite", "", None, 3])
def test_unknown_cache_type(type_name):
    with pytest.raises(ConfigurationError) as info:
        Cache(type=type_name)
    assert_config_error(info, "unknown cache type", repr(type_name), "'disk'", "'local'")


@pytest.mark.parametrize("mode", ["sometimes", "default-on", "on", None, True])
def test_unknown_mode(mode):
    with pytest.raises(ConfigurationError) as info:
        Cache(mode=mode)
    assert_config_error(info, "mode", "'default_on'", "'default_off'", repr(mode))


@pytest.mark.parametrize(
    ("type_name", "kwargs", "fragments"),
    [
        ("local", {"max_size": 10}, ("'max_size'", "max_size_in_memory", "max_memory_bytes", "type='local'")),
        ("local", {"host": "localhost"}, ("'host'", "max_size_in_memory")),
        ("local", {"disk_cache_dir": "/tmp/x"}, ("'disk_cache_dir'", "max_memory_bytes")),
        ("local", {"similarity_threshold": 0.8}, ("'similarity_threshold'",)),
        ("disk", {"disk_dir": "x"}, ("'disk_dir'", "disk_cache_dir", "max_disk_bytes", "disk_timeout", "type='disk'")),
        ("disk", {"max_size_in_memory": 5}, ("'max_size_in_memory'", "disk_cache_dir")),
    ],
)
def test_unknown_cache_kwarg(tmp_path, type_name, kwargs, fragments):
    with pytest.raises(ConfigurationError) as info:
        Cache(type=type_name, **kwargs)
    assert_config_error(info, "unknown parameter", *fragments)


@pytest.mark.parametrize(
    ("value", "fragments"),
    [
        ("completion", ("supported_call_types", "list")),
        (["completion", "chat"], ("'chat'", "supported_call_types")),
        (["completion", 1], ("supported_call_types",)),
        (["streaming"], ("'streaming'",)),
    ],
)
def test_bad_supported_call_types(value, fragments):
    with pytest.raises(ConfigurationError) as info:
        Cache(supported_call_types=value)
    message = assert_config_error(info, *fragments)
    for call_type in CALL_TYPES:
        assert repr(call_type) in message


@pytest.mark.parametrize("namespace", ["", 5])
def test_bad_cache_namespace(namespace):
    with pytest.raises(ConfigurationError) as info:
        Cache(namespace=namespace)
    assert_config_error(info, "namespace", "non-empty string")


def test_enable_cache_with_bad_arguments_keeps_the_active_cache():
    active = Cache()
    llmstash.cache = active
    with pytest.raises(ConfigurationError):
        llmstash.enable_cache(type="s3", host="localhost")
    with pytest.raises(ConfigurationError):
        llmstash.update_cache(mode="always")
    assert llmstash.cache is active


def test_custom_key_function_is_namespaced_the_same_in_calls_and_direct_access(upstream):
    cache = Cache(namespace="team")
    cache.get_cache_key = lambda *args, **kwargs: "my-key-" + kwargs["messages"][0]["content"]
    llmstash.cache = cache
    kwargs = dict(model="gpt-3.5-turbo", messages=[{"role": "user", "content": "q1"}], api_base=upstream.base_url)
    response = llmstash.completion(**kwargs, cache={"namespace": "t1"})
    assert response._hidden_params["cache_key"] == "team:t1:my-key-q1"
    assert cache.get_cache(**kwargs, cache={"namespace": "t1"}).id == response.id
    assert cache.get_cache(**kwargs) is None  # another namespace


def test_flushing_a_namespace_leaves_a_namespace_with_a_colon_alone():
    outer = Cache(namespace="a")
    outer.add_cache("outer", cache_key=outer.get_cache_key(model="m", messages=[], mock_response="x"))
    colon = Cache(namespace="a:b")
    colon.storage = outer.storage  # one backend, two tenants
    colon_key = colon.get_cache_key(model="m", messages=[], mock_response="x")
    colon.add_cache("colon", cache_key=colon_key)
    outer.flush_cache()
    assert colon.get_cache(cache_key=colon_key) == "colon"
