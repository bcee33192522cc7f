"""Property tests of cache keys (canonical, complete, secret-free) and of the entry envelope codec."""

from __future__ import annotations

import contextlib
import copy
import random
import re
import string
from collections.abc import Iterator
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from llmstash._core import keys as keys_module
from llmstash._core.envelope import KINDS, Entry, decode, encode
from llmstash._core.keys import NOT_KEYED, request_key, with_namespace
from llmstash.caching import Cache
from llmstash.exceptions import CorruptEntryError

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

BASE = "http://127.0.0.1:9/v1"
HEX64 = re.compile(r"[0-9a-f]{64}")

# ----- strategies -------------------------------------------------------------------------------

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
TEXT = st.text(max_size=12)
SCALARS = st.none() | st.booleans() | INT64 | FLOATS | TEXT


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=5)


JSON = st.recursive(SCALARS, _containers, max_leaves=10)
NESTED_DICTS = st.dictionaries(st.text(max_size=6), JSON, min_size=1, max_size=4)

# Parameter names: the OpenAI ones and provider-specific ones, plus random identifiers.
KNOWN_KEYED = [
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "seed",
    "stop",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "presence_penalty",
    "frequency_penalty",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "user",
    "reasoning_effort",
    "modalities",
    "dimensions",
    "encoding_format",
    "top_k",
    "repetition_penalty",
    "safe_prompt",
    "mock_response",
]
RESERVED = {"model", "messages", "prompt", "input", "call_type", "cache", "caching", "extra_body"}
SECRET_SUFFIXES = ("api_key", "key", "token", "secret", "password", "credential", "credentials")


def looks_secret(name: str) -> bool:
    """The documented rule: names ending in api_key, key, token, secret, password, credential(s)."""
    lowered = name.lower()
    return any(lowered == suffix or lowered.endswith("_" + suffix) for suffix in SECRET_SUFFIXES)


KEYED_NAMES = st.sampled_from(KNOWN_KEYED) | st.from_regex(r"[a-z][a-z0-9_]{0,14}", fullmatch=True).filter(
    lambda name: name not in NOT_KEYED and name not in RESERVED and not looks_secret(name)
)
PARAMS = st.dictionaries(KEYED_NAMES, JSON, max_size=5)

SECRET_NAMES = [
    "api_key",
    "azure_ad_token",
    "aws_secret_access_key",
    "aws_session_token",
    "vertex_credentials",
    "client_secret",
    "password",
    "openai_api_key",
    "refresh_token",
    "API_KEY",
    "Azure_AD_Token",
]
SECRET_VALUES = st.text(alphabet=string.ascii_letters + string.digits, min_size=12, max_size=24).map(lambda s: "SeCrEt" + s)
SURROGATE_TEXT = st.lists(st.characters(categories=["Cs"]) | st.characters(), min_size=1, max_size=12).map("".join)


def reorder(value: Any, rnd: random.Random) -> Any:
    """The same value with every dict's items in a shuffled order, at any depth."""
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {name: reorder(item, rnd) for name, item in items}
    if isinstance(value, list):
        return [reorder(item, rnd) for item in value]
    return value


def ref(value: Any) -> Any:
    """An independent model of when two parameter values are the same request: JSON equality,
    where integral floats equal their ints and bools are not numbers."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("num", value)  # Python compares 1 == 1.0 exactly
    if isinstance(value, str):
        return ("str", value)
    if value is None:
        return ("null",)
    if isinstance(value, list):
        return ("list", tuple(ref(item) for item in value))
    if isinstance(value, dict):
        return ("dict", frozenset((str(name), ref(item)) for name, item in value.items()))
    raise TypeError(type(value))


@contextlib.contextmanager
def captured_canonical_bytes() -> Iterator[list[bytes]]:
    """Every canonical document request_key hashes while the block runs."""
    seen: list[bytes] = []
    real = keys_module.canonical_bytes

    def spy(document: Any) -> bytes:
        data = real(document)
        seen.append(data)
        return data

    with mock.patch.object(keys_module, "canonical_bytes", spy):
        yield seen


def chat_key(payload: Any = None, params: dict[str, Any] | None = None) -> str:
    messages = payload if payload is not None else [{"role": "user", "content": "hi"}]
    return request_key("chat", "openai/gpt-4o", BASE, messages, params or {})


# ----- canonical form -----------------------------------------------------------------------------


@SETTINGS
@given(params=PARAMS, payload=JSON, rnd=st.randoms(use_true_random=False))
def test_request_key_ignores_param_order_and_dict_order(params: dict[str, Any], payload: Any, rnd: random.Random) -> None:
    key = request_key("chat", "openai/gpt-4o", BASE, payload, params)
    assert HEX64.fullmatch(key)
    assert request_key("chat", "openai/gpt-4o", BASE, reorder(payload, rnd), reorder(params, rnd)) == key
    assert request_key("chat", "openai/gpt-4o", BASE, copy.deepcopy(payload), copy.deepcopy(params)) == key


@SETTINGS
@given(params=PARAMS, messages=st.lists(NESTED_DICTS, min_size=1, max_size=3), rnd=st.randoms(use_true_random=False))
def test_cache_key_ignores_kwarg_order_and_dict_order(params: dict[str, Any], messages: list[Any], rnd: random.Random) -> None:
    cache = Cache()
    kwargs = {"model": "gpt-4o", "messages": messages, "api_base": BASE, "api_key": "sk-x", **params}
    key = cache.get_cache_key(**kwargs)
    shuffled = reorder(kwargs, rnd)
    assert cache.get_cache_key(**shuffled) == key
    assert cache.get_cache_key(**dict(reversed(list(kwargs.items())))) == key


def test_nested_dict_order_at_depth() -> None:
    a = {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": {"properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}},
    }
    b = {
        "json_schema": {"schema": {"properties": {"b": {"type": "integer"}, "a": {"type": "string"}}}, "name": "x"},
        "type": "json_schema",
    }
    messages_a = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    messages_b = [{"content": [{"text": "hi", "type": "text"}], "role": "user"}]
    assert chat_key(messages_a, {"response_format": a}) == chat_key(messages_b, {"response_format": b})


@SETTINGS
@given(params=PARAMS, data=st.data())
def test_changing_a_keyed_value_changes_the_key(params: dict[str, Any], data: st.DataObject) -> None:
    assume(params)
    name = data.draw(st.sampled_from(sorted(params)))
    new_value = data.draw(JSON)
    assume(ref(new_value) != ref(params[name]))
    assert chat_key(params=params) != chat_key(params={**params, name: new_value})


@SETTINGS
@given(params=PARAMS, name=KEYED_NAMES, value=JSON)
def test_adding_or_removing_a_keyed_param_changes_the_key(params: dict[str, Any], name: str, value: Any) -> None:
    assume(name not in params)
    with_param = {**params, name: value}
    assert chat_key(params=params) != chat_key(params=with_param)


@SETTINGS
@given(payload=JSON, other=JSON)
def test_changing_the_payload_changes_the_key(payload: Any, other: Any) -> None:
    assume(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS) != orjson.dumps(other, option=orjson.OPT_SORT_KEYS))
    assert chat_key(payload) != chat_key(other)


def test_integral_floats_equal_ints() -> None:
    cache = Cache()
    base = dict(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert cache.get_cache_key(**base, temperature=1) == cache.get_cache_key(**base, temperature=1.0)
    assert cache.get_cache_key(**base, temperature=0) == cache.get_cache_key(**base, temperature=-0.0)
    assert cache.get_cache_key(**base, max_tokens=100) == cache.get_cache_key(**base, max_tokens=100.0)
    assert cache.get_cache_key(**base, logit_bias={"50256": -100}) == cache.get_cache_key(**base, logit_bias={"50256": -100.0})
    assert cache.get_cache_key(**base, temperature=1) != cache.get_cache_key(**base, temperature=1.5)
    assert cache.get_cache_key(**base, logprobs=True) != cache.get_cache_key(**base, logprobs=1)


@pytest.mark.parametrize("value", [1e20, -1e300, 2.0**63, 2.0**64])
def test_huge_integral_floats_still_make_a_key(value: float) -> None:
    key = chat_key(params={"temperature": value, "logit_bias": {"1": value}})
    assert HEX64.fullmatch(key)
    assert key != chat_key(params={"temperature": 1.0, "logit_bias": {"1": value}})


def test_int_and_str_dict_keys_share_a_key() -> None:
    cache = Cache()
    base = dict(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    as_ints = cache.get_cache_key(**base, logit_bias={50256: -100, 1234: 5})
    as_strs = cache.get_cache_key(**base, logit_bias={"1234": 5, "50256": -100})
    assert as_ints == as_strs
    assert as_ints != cache.get_cache_key(**base, logit_bias={"1234": 5, "50256": -99})


# ----- what is not keyed --------------------------------------------------------------------------


@SETTINGS
@given(
    params=PARAMS,
    name=st.sampled_from(SECRET_NAMES)
    | st.builds(lambda p, s: f"{p}_{s}", st.from_regex(r"[a-z]{1,8}", fullmatch=True), st.sampled_from(SECRET_SUFFIXES)),
    secret=SECRET_VALUES,
)
def test_secrets_never_change_the_key_nor_reach_key_material(params: dict[str, Any], name: str, secret: str) -> None:
    plain = chat_key(params=params)
    with captured_canonical_bytes() as seen:
        assert chat_key(params={**params, name: secret}) == plain
        assert chat_key(params={**params, name: {"nested": [secret]}}) == plain
    assert seen and all(secret.encode() not in data for data in seen)


@FEW
@given(params=PARAMS, name=st.sampled_from(sorted(NOT_KEYED)), value=JSON | SECRET_VALUES)
def test_not_keyed_params_never_change_the_key(params: dict[str, Any], name: str, value: Any) -> None:
    plain = chat_key(params=params)
    assert chat_key(params={**params, name: value}) == plain
    if isinstance(value, str) and value.startswith("SeCrEt"):
        with captured_canonical_bytes() as seen:
            chat_key(params={**params, name: value})
        assert value.encode() not in seen[0]


def test_not_keyed_params_may_hold_non_json_values() -> None:
    plain = chat_key()
    assert chat_key(params={"client": object(), "logger_fn": print, "litellm_logging_obj": object()}) == plain


def test_secrets_through_get_cache_key() -> None:
    cache = Cache()
    base = dict(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], api_base=BASE)
    plain = cache.get_cache_key(**base)
    with captured_canonical_bytes() as seen:
        for name in ("api_key", "azure_ad_token", "aws_secret_access_key"):
            assert cache.get_cache_key(**base, **{name: "SeCrEt-value-0001"}) == plain
        assert cache.get_cache_key(**base, extra_headers={"Authorization": "Bearer SeCrEt-value-0002"}) == plain
    assert all(b"SeCrEt-value" not in data for data in seen)


def test_extra_body_top_level_params_are_keyed_but_not_its_secrets() -> None:
    cache = Cache()
    base = dict(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], api_base=BASE)
    top_k_5 = cache.get_cache_key(**base, extra_body={"top_k": 5})
    assert top_k_5 != cache.get_cache_key(**base, extra_body={"top_k": 6})
    assert top_k_5 != cache.get_cache_key(**base)
    assert cache.get_cache_key(**base, extra_body={"guided": {"b": 1, "a": [1, 2]}}) != cache.get_cache_key(
        **base, extra_body={"guided": {"b": 1, "a": [2, 1]}}
    )
    with captured_canonical_bytes() as seen:
        with_secret = cache.get_cache_key(**base, extra_body={"top_k": 5, "api_key": "SeCrEt-extra-1"})
        other_secret = cache.get_cache_key(**base, extra_body={"api_key": "SeCrEt-extra-2", "top_k": 5.0})
        with_token = cache.get_cache_key(**base, extra_body={"top_k": 5, "session_token": "SeCrEt-extra-3"})
    assert with_secret == other_secret == with_token == top_k_5
    assert all(b"SeCrEt-extra" not in data for data in seen)


RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "credentials_form",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "key": {"type": "string", "description": "the lookup key"},
                "token": {"type": "string", "maxLength": 64},
                "api_key": {"type": "string"},
                "password": {"type": "string", "minLength": 8},
                "secret": {"type": "boolean"},
            },
            "required": ["key", "token", "api_key"],
            "additionalProperties": False,
        },
    },
}


def _leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for name, item in value.items():
            yield from _leaf_paths(item, (*path, name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaf_paths(item, (*path, index))
    else:
        yield path


def _mutated(value: Any, path: tuple[Any, ...]) -> Any:
    clone = copy.deepcopy(value)
    target = clone
    for step in path[:-1]:
        target = target[step]
    old = target[path[-1]]
    target[path[-1]] = (not old) if isinstance(old, bool) else (old + 1 if isinstance(old, int) else f"{old}-changed")
    return clone


def _renamed(value: Any, path: tuple[Any, ...]) -> Any:
    """The same document with the dict key at the end of ``path`` renamed."""
    clone = copy.deepcopy(value)
    target = clone
    for step in path[:-1]:
        target = target[step]
    if isinstance(target, dict):
        target[f"{path[-1]}_renamed"] = target.pop(path[-1])
    return clone


def test_json_schema_with_secret_looking_property_names_is_fully_keyed() -> None:
    cache = Cache()
    base = dict(model="gpt-4o", messages=[{"role": "user", "content": "fill the form"}], api_base=BASE)
    original = cache.get_cache_key(**base, response_format=RESPONSE_FORMAT)
    seen = {original}
    paths = list(_leaf_paths(RESPONSE_FORMAT))
    assert any("token" in path for path in paths) and any("api_key" in path for path in paths)
    for path in paths:
        seen.add(cache.get_cache_key(**base, response_format=_mutated(RESPONSE_FORMAT, path)))
        if isinstance(path[-1], str):
            seen.add(cache.get_cache_key(**base, response_format=_renamed(RESPONSE_FORMAT, path)))
    expected = 1 + len(paths) + sum(isinstance(path[-1], str) for path in paths)
    assert len(seen) == expected  # every single change gave a new key
    # the same holds for tools whose parameters are named like secrets
    tool = {
        "type": "function",
        "function": {"name": "login", "parameters": {"type": "object", "properties": {"api_key": {"type": "string"}}}},
    }
    renamed = copy.deepcopy(tool)
    renamed["function"]["parameters"]["properties"] = {"token": {"type": "string"}}
    assert cache.get_cache_key(**base, tools=[tool]) != cache.get_cache_key(**base, tools=[renamed])


# ----- strings that are not valid UTF-8 ------------------------------------------------------------


@SETTINGS
@given(text=SURROGATE_TEXT, other=SURROGATE_TEXT, rnd=st.randoms(use_true_random=False))
def test_lone_surrogates_still_make_a_key(text: str, other: str, rnd: random.Random) -> None:
    messages = [{"role": "user", "content": text, "name": "u"}]
    key = chat_key(messages, {"user": text, "metadata": {"x": text}, "stop": [text, "end"]})
    assert HEX64.fullmatch(key)
    assert chat_key(reorder(messages, rnd), {"stop": [text, "end"], "user": text}) == key
    if other != text:
        assert chat_key([{"role": "user", "content": other, "name": "u"}], {"user": text, "stop": [text, "end"]}) != key


def test_lone_surrogate_through_cache_and_call() -> None:
    import llmstash

    cache = Cache()
    llmstash.cache = cache
    messages = [{"role": "user", "content": "bad \ud800 half"}]
    key = cache.get_cache_key(model="gpt-4o", messages=messages, mock_response="ok")  # mock_response is keyed
    assert key != cache.get_cache_key(
        model="gpt-4o", messages=[{"role": "user", "content": "bad \udc00 half"}], mock_response="ok"
    )
    first = llmstash.completion(model="gpt-4o", messages=messages, mock_response="ok")
    second = llmstash.completion(model="gpt-4o", messages=messages, mock_response="ok")
    assert first._hidden_params["cache_key"] == key
    assert second._hidden_params["cache_hit"] is True and second.id == first.id


# ----- namespaces, models, endpoints, families ----------------------------------------------------


@SETTINGS
@given(key=st.text(min_size=1, max_size=20), namespaces=st.lists(st.none() | st.text(max_size=8), max_size=4))
def test_with_namespace_prefixes(key: str, namespaces: list[str | None]) -> None:
    used = [ns.replace("%", "%25").replace(":", "%3A") for ns in namespaces if ns]  # a ":" inside is escaped
    assert with_namespace(key, *namespaces) == ":".join([*used, key])


def test_cache_namespaces_prefix_the_key() -> None:
    kwargs = dict(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    plain = Cache().get_cache_key(**kwargs)
    assert HEX64.fullmatch(plain)
    assert Cache(namespace="prod").get_cache_key(**kwargs) == f"prod:{plain}"
    assert Cache(namespace="prod").get_cache_key(**kwargs, cache={"namespace": "tenant-a"}) == f"prod:tenant-a:{plain}"
    assert Cache().get_cache_key(**kwargs, cache={"namespace": "tenant-a"}) == f"tenant-a:{plain}"


def test_models_endpoints_and_families_give_different_keys() -> None:
    cache = Cache()
    messages = [{"role": "user", "content": "hello"}]
    variants = {
        "gpt-4o": cache.get_cache_key(model="gpt-4o", messages=messages, api_base=BASE),
        "gpt-4o-mini": cache.get_cache_key(model="gpt-4o-mini", messages=messages, api_base=BASE),
        "openai/other": cache.get_cache_key(model="openai/other", messages=messages, api_base=BASE),
        "azure/gpt-4o": cache.get_cache_key(model="azure/gpt-4o", messages=messages, api_base="http://127.0.0.1:9/v1"),
        "endpoint-2": cache.get_cache_key(model="gpt-4o", messages=messages, api_base="http://127.0.0.1:10/v1"),
        "endpoint-path": cache.get_cache_key(model="gpt-4o", messages=messages, api_base="http://127.0.0.1:9/v2"),
        "text": cache.get_cache_key(model="gpt-4o", prompt="hello", api_base=BASE),
        "text-same-payload": cache.get_cache_key(model="gpt-4o", prompt=messages, api_base=BASE),
        "embedding": cache.get_cache_key(model="gpt-4o", input="hello", api_base=BASE),
        "embedding-same-payload": cache.get_cache_key(model="gpt-4o", input=messages, api_base=BASE),
    }
    assert len(set(variants.values())) == len(variants)
    for family in ("chat", "text", "embedding"):
        assert request_key(family, "openai/m", BASE, "x", {}) not in {
            request_key(other, "openai/m", BASE, "x", {}) for other in ("chat", "text", "embedding") if other != family
        }


def test_same_model_and_endpoint_spelled_differently_share_a_key() -> None:
    cache = Cache()
    messages = [{"role": "user", "content": "hello"}]
    keys = {
        cache.get_cache_key(model="gpt-4o", messages=messages, api_base=BASE),
        cache.get_cache_key(model="openai/gpt-4o", messages=messages, api_base=BASE),
        cache.get_cache_key(model="openai/gpt-4o", messages=messages, base_url=BASE),
        cache.get_cache_key(model="gpt-4o", messages=messages, api_base=BASE + "/"),
        cache.get_cache_key(model="gpt-4o", messages=messages),  # OPENAI_BASE_URL is BASE in the tests
    }
    assert len(keys) == 1


@FEW
@given(a=st.from_regex(r"[a-z0-9.\-]{1,20}", fullmatch=True), b=st.from_regex(r"[a-z0-9.\-]{1,20}", fullmatch=True))
def test_distinct_model_names_give_distinct_keys(a: str, b: str) -> None:
    assume(a != b)
    cache = Cache()
    messages = [{"role": "user", "content": "hello"}]
    assert cache.get_cache_key(model=a, messages=messages) != cache.get_cache_key(model=b, messages=messages)
    assert cache.get_cache_key(model=a, messages=messages) == cache.get_cache_key(model=f"openai/{a}", messages=messages)


# ----- the envelope codec ----------------------------------------------------------------------------

ENVELOPE_JSON = st.recursive(
    st.none() | st.booleans() | INT64 | FLOATS | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=25,
)


@SETTINGS
@given(
    kind=st.sampled_from(sorted(KINDS)),
    data=ENVELOPE_JSON,
    created_at=FLOATS | st.integers(min_value=0, max_value=2**40),
    expires_at=st.none() | FLOATS,
)
def test_envelope_roundtrips_any_json_value(kind: str, data: Any, created_at: float, expires_at: float | None) -> None:
    raw = encode(kind, data, created_at, expires_at)
    assert isinstance(raw, bytes) and raw.startswith(b"LS\x01")
    entry = decode(raw)
    assert entry == Entry(kind, float(created_at), expires_at, data)
    assert type(entry.created_at) is float
    # type-exact, not just ==: True must not come back as 1, nor 1 as 1.0
    assert orjson.dumps(entry.data) == orjson.dumps(data)
    # every strict prefix is damaged
    for cut in {0, 1, 2, 3, len(raw) // 2, len(raw) - 1}:
        with pytest.raises(CorruptEntryError):
            decode(raw[:cut])


def _is_valid_entry(entry: Any) -> bool:
    return (
        isinstance(entry, Entry)
        and entry.kind in KINDS
        and type(entry.created_at) is float
        and (entry.expires_at is None or isinstance(entry.expires_at, (int, float)))
    )


RANDOM_ENVELOPES = st.one_of(
    st.binary(max_size=64),
    st.binary(max_size=64).map(lambda body: b"LS" + body),
    st.binary(max_size=64).map(lambda body: b"LS\x01" + body),
    st.tuples(st.integers(0, 255), ENVELOPE_JSON).map(lambda t: b"LS" + bytes([t[0]]) + orjson.dumps(t[1])),
    ENVELOPE_JSON.map(lambda value: b"LS\x01" + orjson.dumps(value)),
    st.tuples(
        st.sampled_from(sorted(KINDS)) | ENVELOPE_JSON,
        ENVELOPE_JSON,
        ENVELOPE_JSON,
        ENVELOPE_JSON,
    ).map(lambda fields: b"LS\x01" + orjson.dumps(list(fields))),
    st.lists(ENVELOPE_JSON, max_size=6).map(lambda fields: b"LS\x01" + orjson.dumps(fields)),
)


@settings(max_examples=200, deadline=None)
@given(raw=RANDOM_ENVELOPES)
def test_random_bytes_decode_or_raise_corrupt_entry(raw: bytes) -> None:
    try:
        entry = decode(raw)
    except CorruptEntryError:
        return
    assert _is_valid_entry(entry)


@pytest.mark.parametrize(
    "raw",
    [
        b'LS\x01[["chat"], 1, null, {}]',
        b'LS\x01[{"k": 1}, 1, null, {}]',
        b'LS\x01["chat", [1], null, {}]',
        b'LS\x01["chat", 1, "never", {}]',
        b'LS\x01["chat", 1, null]',
        b'LS\x01["chat", 1, null, {}, 5]',
        b'LS\x01"chat"',
        b"LS\x01null",
        b'LS\x01["chat", 1' + b"0" * 400 + b", null, {}]",
        b"LS\x00" + encode("chat", {}, 1.0, None)[3:],
        b"LS\x02" + encode("chat", {}, 1.0, None)[3:],
        b"LS\x03" + encode("chat", {}, 1.0, None)[3:],
    ],
)
def test_malformed_envelopes_are_corrupt(raw: bytes) -> None:
    with pytest.raises(CorruptEntryError):
        decode(raw)


@SETTINGS
@given(
    vector=st.lists(st.floats(allow_nan=False, width=64), min_size=1, max_size=300),
    model=st.none() | st.text(max_size=30),
    created_at=FLOATS,
    expires_at=st.none() | FLOATS,
)
def test_embedding_vectors_are_packed_and_roundtrip_exactly(
    vector: list[float], model: str | None, created_at: float, expires_at: float | None
) -> None:
    data = {"embedding": vector, "model": model}
    raw = encode("embedding-item", data, created_at, expires_at)
    assert raw.startswith(b"LS\x02")
    assert len(raw) < len(b"LS\x01" + orjson.dumps(["embedding-item", created_at, expires_at, data])) + 40
    entry = decode(raw)
    assert entry == Entry("embedding-item", float(created_at), expires_at, data)
    assert orjson.dumps(entry.data) == orjson.dumps(data)  # every float bit for bit
    for cut in {3, 5, 7, len(raw) - 8, len(raw) - 1}:  # any shorter entry is damaged, even by whole values
        with pytest.raises(CorruptEntryError):
            decode(raw[:cut])
    with pytest.raises(CorruptEntryError):
        decode(raw + b"\x00" * 8)  # an extra value


@pytest.mark.parametrize(
    "data",
    [
        {"embedding": "AAAAPwAAAL8=", "model": "m"},  # encoding_format="base64"
        {"embedding": [], "model": "m"},
        {"embedding": [0.5, "x"], "model": "m"},
        {"embedding": [0.5, [1.0]], "model": "m"},
        {"embedding": [0.5], "model": "m", "extra": 1},
        {"embedding": [0.5], "other": "m"},
    ],
)
def test_other_embedding_items_stay_json(data: dict[str, Any]) -> None:
    raw = encode("embedding-item", data, 1.0, None)
    assert raw.startswith(b"LS\x01")
    assert decode(raw).data == data


@pytest.mark.parametrize(
    "raw",
    [
        b"LS\x02",
        b"LS\x02\x05\x00\x00\x00[1,nu",
        b"LS\x02\xff\xff\xff\x7f[1,null,null,1]" + b"\x00" * 8,
        b"LS\x02\x0e\x00\x00\x00[1,null,null]" + b"\x00" * 8,
        b"LS\x02\x10\x00\x00\x00[1,null,null,1]" + b"\x00" * 8,
        b'LS\x02\x13\x00\x00\x00["1",null,null,1]' + b"\x00" * 8,
        b"LS\x02\x13\x00\x00\x00[1,null,null,1.0]" + b"\x00" * 8,
        b"LS\x02\x10\x00\x00\x00[1,null,null,2]" + b"\x00" * 8,
    ],
)
def test_damaged_vector_entries_are_corrupt(raw: bytes) -> None:
    with pytest.raises(CorruptEntryError):
        decode(raw)


def test_encode_refuses_non_json() -> None:
    with pytest.raises(TypeError):
        encode("value", {"x": object()}, 1.0, None)


def test_a_colon_inside_a_namespace_cannot_reach_a_nested_namespace():
    from llmstash._core.keys import with_namespace

    assert with_namespace("k", "a:b") != with_namespace("k", "a", "b")
    assert with_namespace("k", "a%3Ab") != with_namespace("k", "a:b")
    assert with_namespace("k", "prod", "tenant-a") == "prod:tenant-a:k"
