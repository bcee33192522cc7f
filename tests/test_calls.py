"""The call functions and providers: completion, text_completion, embedding and their async twins
against the local recording upstream; response objects; routing (env, base_url, Azure);
mock_response; upstream errors; callbacks; and what is refused."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

import llmstash
from llmstash import exceptions
from llmstash.caching import Cache
from llmstash.integrations.custom_logger import CustomLogger
from llmstash.testing import MockUpstream

MSGS = [{"role": "user", "content": "Tell me a joke."}]
SECRET = "sk-test-secret-9f8e7d"


def hit(response) -> bool:
    return response._hidden_params["cache_hit"]


def closed_port_base() -> str:
    server = MockUpstream()  # bound, never served, then closed: nothing listens on its port
    base = server.base_url
    server.stop()
    return base


class Recorder(CustomLogger):
    def __init__(self) -> None:
        self.events: list[tuple[str, dict, object]] = []

    def log_success_event(self, kwargs, response_obj, start_time, end_time):
        assert end_time >= start_time
        self.events.append(("success", kwargs, response_obj))

    def log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self.events.append(("failure", kwargs, response_obj))


class AsyncRecorder(CustomLogger):
    def __init__(self) -> None:
        self.events: list[tuple[str, dict, object]] = []

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        self.events.append(("async_success", kwargs, response_obj))

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self.events.append(("async_failure", kwargs, response_obj))


# ----- the six call functions -------------------------------------------------------------------


def test_completion_miss_then_hit(upstream):
    llmstash.cache = Cache()
    first = llmstash.completion(model="gpt-3.5-turbo", messages=MSGS, api_base=upstream.base_url)
    assert isinstance(first, llmstash.ModelResponse)
    assert first.object == "chat.completion"
    assert first.choices[0].message.content == "Here is a careful answer about: Tell me a joke."
    assert first._hidden_params["model"] == "gpt-3.5-turbo"
    second = llmstash.completion(model="gpt-3.5-turbo", messages=MSGS, api_base=upstream.base_url)
    assert not hit(first) and hit(second)
    assert (second.id, second.created) == (first.id, first.created)
    assert second._hidden_params["cache_key"] == first._hidden_params["cache_key"]
    assert upstream.call_count("chat/completions") == 1


def test_acompletion_miss_then_hit(upstream):
    llmstash.cache = Cache()

    async def scenario():
        a = await llmstash.acompletion(model="gpt-3.5-turbo", messages=MSGS, api_base=upstream.base_url)
        b = await llmstash.acompletion(model="gpt-3.5-turbo", messages=MSGS, api_base=upstream.base_url)
        return a, b

    first, second = asyncio.run(scenario())
    assert isinstance(first, llmstash.ModelResponse)
    assert not hit(first) and hit(second)
    assert second.id == first.id and second.choices[0].message.content == first.choices[0].message.content
    assert upstream.call_count("chat/completions") == 1


def test_text_completion_and_async_twin(upstream):
    llmstash.cache = Cache()
    args = dict(model="gpt-3.5-turbo-instruct", prompt="Say this is a test", max_tokens=7, api_base=upstream.base_url)
    first = llmstash.text_completion(**args)
    assert isinstance(first, llmstash.TextCompletionResponse)
    assert first.object == "text_completion"
    assert first.choices[0].text == "Here is a careful answer about: Say this is a test"
    second = asyncio.run(llmstash.atext_completion(**args))
    assert isinstance(second, llmstash.TextCompletionResponse)
    assert not hit(first) and hit(second) and second.id == first.id
    assert upstream.call_count("/v1/completions") == 1
    assert upstream.calls[0].body == {"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test", "max_tokens": 7}


def test_embedding_and_async_twin(upstream):
    llmstash.cache = Cache()
    args = dict(model="text-embedding-3-small", input=["alpha", "beta"], api_base=upstream.base_url)
    first = llmstash.embedding(**args)
    assert isinstance(first, llmstash.EmbeddingResponse)
    assert [item.index for item in first.data] == [0, 1]
    assert len(first.data[0].embedding) == 8
    assert first.data[0].embedding != first.data[1].embedding
    second = asyncio.run(llmstash.aembedding(**args))
    assert isinstance(second, llmstash.EmbeddingResponse)
    assert not hit(first) and hit(second)
    assert second.data[1].embedding == first.data[1].embedding
    assert upstream.call_count("embeddings") == 1


def test_embedding_with_a_string_input_and_dimensions(upstream):
    response = llmstash.embedding(model="text-embedding-3-small", input="alpha", dimensions=4, api_base=upstream.base_url)
    assert len(response.data) == 1 and len(response.data[0].embedding) == 4
    assert upstream.calls[0].body == {"model": "text-embedding-3-small", "input": "alpha", "dimensions": 4}


@pytest.mark.parametrize("order", ["sync-then-async", "async-then-sync"])
def test_sync_and_async_share_entries(upstream, order):
    llmstash.cache = Cache()
    kwargs = dict(model="gpt-3.5-turbo", messages=MSGS, temperature=0.2, api_base=upstream.base_url)

    def sync():
        return llmstash.completion(**kwargs)

    def asynchronous():
        return asyncio.run(llmstash.acompletion(**kwargs))

    first_call, second_call = (sync, asynchronous) if order == "sync-then-async" else (asynchronous, sync)
    first = first_call()
    second = second_call()
    assert not hit(first) and hit(second)
    assert second.id == first.id
    assert upstream.call_count("chat/completions") == 1


def test_call_families_do_not_share_entries(upstream):
    llmstash.cache = Cache()
    chat = llmstash.completion(model="gpt-3.5-turbo", messages="hello", api_base=upstream.base_url)
    text = llmstash.text_completion(model="gpt-3.5-turbo", prompt="hello", api_base=upstream.base_url)
    embedding = llmstash.embedding(model="gpt-3.5-turbo", input="hello", api_base=upstream.base_url)
    assert not hit(chat) and not hit(text) and not hit(embedding)
    assert upstream.call_count() == 3


def test_request_body_holds_parameters_but_not_llmstash_options(upstream):
    llmstash.completion(
        model="gpt-3.5-turbo",
        messages=MSGS,
        temperature=0.5,
        max_tokens=20,
        user="u-1",
        extra_body={"top_k": 3},
        extra_headers={"X-Trace": "abc"},
        metadata={"run": 1},
        timeout=30,
        api_key=SECRET,
        api_base=upstream.base_url,
        caching=True,
        cache={"ttl": 5},
    )
    recorded = upstream.calls[0]
    assert recorded.path == "/v1/chat/completions"
    assert recorded.body == {
        "model": "gpt-3.5-turbo",
        "messages": MSGS,
        "temperature": 0.5,
        "max_tokens": 20,
        "user": "u-1",
        "top_k": 3,
    }
    assert recorded.headers["x-trace"] == "abc"
    assert recorded.headers["authorization"] == f"Bearer {SECRET}"


def test_openai_prefix_is_the_same_model(upstream):
    llmstash.cache = Cache()
    first = llmstash.completion(model="openai/gpt-4o", messages=MSGS, api_base=upstream.base_url)
    second = llmstash.completion(model="gpt-4o", messages=MSGS, api_base=upstream.base_url)
    assert upstream.calls[0].body["model"] == "gpt-4o"
    assert hit(second) and second.id == first.id


@pytest.mark.parametrize("timeout", [0, -1, "fast", True])
def test_invalid_timeout(upstream, timeout):
    with pytest.raises(llmstash.ConfigurationError) as info:
        llmstash.completion(model="gpt-3.5-turbo", messages=MSGS, api_base=upstream.base_url, timeout=timeout)
    assert "timeout" in str(info.value) and "positive" in str(info.value)
    assert upstream.call_count() == 0


# ----- response objects -----------------------------------------------------------------------


def test_response_attribute_and_item_access(upstream):
    r = llmstash.completion(model="gpt-3.5-turbo", messages=MSGS, api_base=upstream.base_url)
    assert r.choices[0].message.content == r["choices"][0]["message"]["content"]
    assert r.choices[0].message.role == "assistant" == r["choices"][0]["message"]["role"]
    assert r.usage.total_tokens == r["usage"]["total_tokens"] == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.id == r["id"] and r.model == r["model"] == "gpt-3.5-turbo"
    assert "choices" in r and "nope" not in r
    assert r.get("nope", 7) == 7
    assert set(r.keys()) >= {"id", "object", "created", "model", "choices", "usage"}
    with pytest.raises(AttributeError):
        r.nope  # noqa: B018
    with pytest.raises(KeyError):
        r["nope"]


def test_model_dump_is_a_deep_copy_without_hidden_params(upstream):
    r = llmstash.completion(model="gpt-3.5-turbo", messages=MSGS, api_base=upstream.base_url)
    dump = r.model_dump()
    assert isinstance(dump, dict)
    assert dump["choices"][0]["message"]["content"] == r.choices[0].message.content
    assert "_hidden_params" not in dump and "cache_hit" not in dump
    original = r.choices[0].message.content
    dump["choices"][0]["message"]["content"] = "changed"
    dump["usage"]["total_tokens"] = -1
    assert r.choices[0].message.content == original
    assert r.usage.total_tokens > 0
    assert llmstash.ModelResponse(r.model_dump()) == r


def test_mutating_a_hit_does_not_change_the_cached_entry(upstream):
    llmstash.cache = Cache()
    miss = llmstash.completion(model="gpt-3.5-turbo", messages=MSGS, api_base=upstream.base_url)
    original = miss.choices[0].message.content
    miss.choices[0].message.content = "mutated miss"  # after the write
    hit1 = llmstash.completion(model="gpt-3.5-turbo", messages=MSGS, api_base=upstream.base_url)
    assert hit1.choices[0].message.content == original
    hit1.choices[0].message.content = "mutated hit"
    hit1["id"] = "someone-else"
    hit1.usage.total_tokens = 0
    hit2 = llmstash.completion(model="gpt-3.5-turbo", messages=MSGS, api_base=upstream.base_url)
    assert hit(hit2)
    assert hit2.choices[0].message.content == original
    assert hit2.id == miss.id
    assert hit2.usage.total_tokens > 0
    assert upstream.call_count("chat/completions") == 1


def test_mutating_an_async_hit_does_not_change_the_cached_entry(upstream):
    llmstash.cache = Cache()

    async def scenario():
        kwargs = dict(model="text-embedding-3-small", input="alpha", api_base=upstream.base_url)
        first = await llmstash.aembedding(**kwargs)
        vector = list(first.data[0].embedding)
        second = await llmstash.aembedding(**kwargs)
        second.data[0].embedding[0] = 123.0
        third = await llmstash.aembedding(**kwargs)
        return vector, third

    vector, third = asyncio.run(scenario())
    assert hit(third) and third.data[0].embedding == vector


# ----- routing: environment, base_url, azure ---------------------------------------------------


def test_openai_base_url_and_api_key_from_the_environment(upstream, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", upstream.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    r = llmstash.completion(model="gpt-3.5-turbo", messages=MSGS)
    assert r.choices[0].message.content
    assert upstream.call_count("chat/completions") == 1
    assert upstream.calls[0].headers["authorization"] == "Bearer sk-from-env"


def test_openai_api_base_from_the_environment(upstream, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_API_BASE", upstream.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-2")
    llmstash.embedding(model="text-embedding-3-small", input="x")
    assert upstream.call_count("embeddings") == 1
    assert upstream.calls[0].headers["authorization"] == "Bearer sk-from-env-2"


def test_openai_base_url_wins_over_openai_api_base(upstream, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", upstream.base_url)
    monkeypatch.setenv("OPENAI_API_BASE", closed_port_base())
    llmstash.completion(model="gpt-3.5-turbo", messages=MSGS)
    assert upstream.call_count("chat/completions") == 1


def test_arguments_win_over_the_environment(upstream, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", closed_port_base())
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    llmstash.completion(model="gpt-3.5-turbo", messages=MSGS, api_base=upstream.base_url, api_key="sk-argument")
    assert upstream.calls[0].headers["authorization"] == "Bearer sk-argument"


def test_no_key_sends_no_authorization_header(upstream):
    llmstash.completion(model="gpt-3.5-turbo", messages=MSGS, api_base=upstream.base_url)
    assert "authorization" not in upstream.calls[0].headers


def test_base_url_is_an_alias_of_api_base(upstream):
    llmstash.cache = Cache()
    first = llmstash.completion(model="gpt-3.5-turbo", messages=MSGS, base_url=upstream.base_url + "/")
    assert upstream.call_count("chat/completions") == 1
    assert upstream.calls[0].path == "/v1/chat/completions"
    assert "base_url" not in upstream.calls[0].body
    second = llmstash.completion(model="gpt-3.5-turbo", messages=MSGS, api_base=upstream.base_url)
    assert hit(second) and second.id == first.id  # the resolved endpoint is keyed, not the spelling


def test_the_same_model_on_two_endpoints_is_two_entries(upstream):
    llmstash.cache = Cache()
    with MockUpstream() as other:
        a = llmstash.completion(model="gpt-3.5-turbo", messages=MSGS, api_base=upstream.base_url)
        b = llmstash.completion(model="gpt-3.5-turbo", messages=MSGS, api_base=other.base_url)
        assert not hit(a) and not hit(b)
        assert other.call_count("chat/completions") == 1
    assert upstream.call_count("chat/completions") == 1


def test_azure_deployment_path_version_and_key_header(upstream):
    llmstash.cache = Cache()
    kwargs = dict(
        model="azure/chatgpt-v-2", messages=MSGS, api_base=upstream.azure_base, api_version="2024-02-01", api_key="azure-key-1"
    )
    first = llmstash.completion(**kwargs)
    recorded = upstream.calls[0]
    assert recorded.path == "/openai/deployments/chatgpt-v-2/chat/completions?api-version=2024-02-01"
    assert recorded.headers["api-key"] == "azure-key-1"
    assert "authorization" not in recorded.headers
    assert recorded.body["model"] == "chatgpt-v-2"
    assert "api_version" not in recorded.body and "api_key" not in recorded.body
    assert first._hidden_params["model"] == "azure/chatgpt-v-2"
    second = asyncio.run(llmstash.acompletion(**kwargs))
    assert hit(second) and second.id == first.id
    assert upstream.call_count("chat/completions") == 1


def test_azure_embedding_and_environment(upstream, monkeypatch):
    monkeypatch.setenv("AZURE_API_BASE", upstream.azure_base)
    monkeypatch.setenv("AZURE_API_KEY", "azure-env-key")
    monkeypatch.delenv("AZURE_API_VERSION", raising=False)
    monkeypatch.delenv("OPENAI_API_VERSION", raising=False)
    llmstash.embedding(model="azure/embedder", input="hi")
    recorded = upstream.calls[0]
    assert recorded.path == "/openai/deployments/embedder/embeddings?api-version=2024-10-21"
    assert recorded.headers["api-key"] == "azure-env-key"


def test_azure_without_an_endpoint_is_a_configuration_error(monkeypatch):
    monkeypatch.delenv("AZURE_API_BASE", raising=False)
    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT", raising=False)
    with pytest.raises(llmstash.ConfigurationError) as info:
        llmstash.completion(model="azure/chatgpt-v-2", messages=MSGS)
    assert "api_base" in str(info.value) and "AZURE_API_BASE" in str(info.value)


def test_azure_api_version_is_not_keyed(upstream):
    llmstash.cache = Cache()
    kwargs = dict(model="azure/chatgpt-v-2", messages=MSGS, api_base=upstream.azure_base)
    first = llmstash.completion(**kwargs, api_version="2024-02-01")
    second = llmstash.completion(**kwargs, api_version="2024-06-01")
    assert hit(second) and second.id == first.id


@pytest.mark.parametrize("model", ["anthropic/claude-3-5-sonnet", "bedrock/anthropic.claude", "ollama/llama3"])
def test_unsupported_provider_prefix(upstream, model):
    llmstash.cache = Cache()
    with pytest.raises(llmstash.ConfigurationError) as info:
        llmstash.completion(model=model, messages=MSGS, api_base=upstream.base_url)
    message = str(info.value)
    assert repr(model) in message and repr(model.split("/")[0]) in message
    assert "openai/<name>" in message and "azure/<deployment>" in message
    assert upstream.call_count() == 0


@pytest.mark.parametrize("model", ["", None, 42])
def test_model_must_be_a_non_empty_string(model):
    with pytest.raises(llmstash.ConfigurationError) as info:
        llmstash.completion(model=model, messages=MSGS)
    assert "model" in str(info.value)


# ----- mock_response --------------------------------------------------------------------------


def test_mock_response_string_makes_no_network_call(upstream):
    llmstash.cache = Cache()
    r = llmstash.completion(model="gpt-3.5-turbo", messages=MSGS, mock_response="It's simple to use!", api_base=upstream.base_url)
    assert r.choices[0].message.content == "It's simple to use!"
    assert r.choices[0].message.role == "assistant"
    assert r.model == "gpt-3.5-turbo"
    assert r.usage.completion_tokens == 4
    again = llmstash.completion(
        model="gpt-3.5-turbo", messages=MSGS, mock_response="It's simple to use!", api_base=upstream.base_url
    )
    assert hit(again) and again.id == r.id
    other = llmstash.completion(model="gpt-3.5-turbo", messages=MSGS, mock_response="Another answer", api_base=upstream.base_url)
    assert not hit(other) and other.choices[0].message.content == "Another answer"
    assert upstream.call_count() == 0


def test_mock_response_without_any_endpoint_configured():
    r = llmstash.text_completion(model="gpt-3.5-turbo-instruct", prompt="hi", mock_response="hello there")
    assert r.choices[0].text == "hello there"
    d = llmstash.completion(model="gpt-3.5-turbo", messages=MSGS, mock_response={"id": "x-1", "choices": []})
    assert d.id == "x-1" and d.choices == []


def test_mock_response_async(upstream):
    r = asyncio.run(
        llmstash.acompletion(model="gpt-3.5-turbo", messages=MSGS, mock_response="async mock", api_base=upstream.base_url)
    )
    assert r.choices[0].message.content == "async mock"
    assert upstream.call_count() == 0


@pytest.mark.parametrize("caller", ["sync", "async"])
def test_mock_response_exception_instance_is_raised_and_nothing_is_stored(upstream, caller):
    llmstash.cache = Cache()
    recorder = Recorder()
    llmstash.callbacks = [recorder]
    error = llmstash.RateLimitError("slow down", status_code=429)
    kwargs = dict(model="gpt-3.5-turbo", messages=MSGS, mock_response=error, api_base=upstream.base_url)
    with pytest.raises(llmstash.RateLimitError) as info:
        if caller == "sync":
            llmstash.completion(**kwargs)
        else:
            asyncio.run(llmstash.acompletion(**kwargs))
    assert info.value is error
    assert upstream.call_count() == 0
    assert llmstash.cache.stats()["writes"] == 0
    assert len(llmstash.cache.storage) == 0
    assert [kind for kind, _, _ in recorder.events] == ["failure"]
    assert recorder.events[0][1]["exception"] is error


def test_mock_response_of_a_wrong_type():
    with pytest.raises(llmstash.ConfigurationError) as info:
        llmstash.completion(model="gpt-3.5-turbo", messages=MSGS, mock_response=42)
    assert "mock_response" in str(info.value)


# ----- upstream errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, llmstash.BadRequestError),
        (403, llmstash.PermissionDeniedError),
        (404, llmstash.NotFoundError),
        (422, exceptions.UnprocessableEntityError),
        (429, llmstash.RateLimitError),
        (500, llmstash.InternalServerError),
        (502, llmstash.InternalServerError),
        (503, llmstash.ServiceUnavailableError),
        (418, llmstash.APIError),
    ],
)
def test_error_statuses_become_exceptions(upstream, status, error_class):
    upstream.fail_next(status, message="the upstream says no")
    with pytest.raises(error_class) as info:
        llmstash.completion(model="gpt-3.5-turbo", messages=MSGS, api_base=upstream.base_url)
    error = info.value
    assert type(error) is error_class
    assert isinstance(error, llmstash.APIError)
    assert error.status_code == status
    assert error.message == "the upstream says no"
    assert str(status) in str(error)
    assert error.model == "gpt-3.5-turbo" and error.llm_provider == "openai"
    assert error.body == {"error": {"message": "the upstream says no", "type": "server_error"}}


@pytest.mark.parametrize(("status", "error_class"), [(429, llmstash.RateLimitError), (500, llmstash.InternalServerError)])
def test_error_statuses_become_exceptions_async(upstream, status, error_class):
    upstream.fail_next(status)
    with pytest.raises(error_class) as info:
        asyncio.run(llmstash.aembedding(model="text-embedding-3-small", input="x", api_base=upstream.base_url))
    assert info.value.status_code == status


def test_wrong_api_key_is_an_authentication_error():
    with MockUpstream(api_key="sk-right") as server:
        with pytest.raises(llmstash.AuthenticationError) as info:
            llmstash.completion(model="gpt-3.5-turbo", messages=MSGS, api_base=server.base_url, api_key="sk-wrong")
        assert info.value.status_code == 401
        assert "Incorrect API key" in str(info.value)
        with pytest.raises(llmstash.AuthenticationError):
            asyncio.run(llmstash.acompletion(model="gpt-3.5-turbo", messages=MSGS, api_base=server.base_url))
        ok = llmstash.completion(model="gpt-3.5-turbo", messages=MSGS, api_base=server.base_url, api_key="sk-right")
        assert ok.choices[0].message.content
        azure_ok = llmstash.completion(model="azure/dep", messages=MSGS, api_base=server.azure_base, api_key="sk-right")
        assert azure_ok.choices[0].message.content
        assert server.call_count("chat/completions") == 4


@pytest.mark.parametrize("caller", ["sync", "async"])
def test_connection_refused_is_an_api_connection_error(caller):
    base = closed_port_base()
    kwargs = dict(model="gpt-3.5-turbo", messages=MSGS, api_base=base)
    with pytest.raises(llmstash.APIConnectionError) as info:
        if caller == "sync":
            llmstash.completion(**kwargs)
        else:
            asyncio.run(llmstash.acompletion(**kwargs))
    assert not isinstance(info.value, llmstash.Timeout)
    assert info.value.status_code is None
    assert "could not reach" in str(info.value)


@pytest.mark.parametrize("caller", ["sync", "async"])
def test_timeout_is_a_timeout_error_and_stores_nothing(caller):
    llmstash.cache = Cache()
    with MockUpstream(delay=1) as slow:
        kwargs = dict(model="gpt-3.5-turbo", messages=MSGS, api_base=slow.base_url)
        started = time.monotonic()
        with pytest.raises(llmstash.Timeout) as info:
            if caller == "sync":
                llmstash.completion(**kwargs, timeout=0.2)
            else:
                asyncio.run(llmstash.acompletion(**kwargs, timeout=0.2))
        assert time.monotonic() - started < 0.9
        assert isinstance(info.value, llmstash.APIConnectionError)
        assert info.value.status_code is None
        assert llmstash.cache.stats()["writes"] == 0
        answered = llmstash.completion(**kwargs, timeout=10)  # the timeout is not keyed
        assert not hit(answered)
        assert slow.call_count("chat/completions") == 2


def test_request_timeout_alias():
    with MockUpstream(delay=1) as slow, pytest.raises(llmstash.Timeout):
        llmstash.completion(model="gpt-3.5-turbo", messages=MSGS, api_base=slow.base_url, request_timeout=0.2)


@pytest.mark.parametrize("caller", ["sync", "async"])
def test_a_failed_upstream_call_stores_nothing(upstream, caller):
    llmstash.cache = Cache()

    def run():
        kwargs = dict(model="gpt-3.5-turbo", messages=MSGS, api_base=upstream.base_url)
        if caller == "sync":
            return llmstash.completion(**kwargs)
        return asyncio.run(llmstash.acompletion(**kwargs))

    upstream.fail_next(500)
    with pytest.raises(llmstash.InternalServerError):
        run()
    assert llmstash.cache.stats()["writes"] == 0
    assert len(llmstash.cache.storage) == 0
    recovered = run()
    assert not hit(recovered)
    again = run()
    assert hit(again) and again.id == recovered.id
    assert upstream.call_count("chat/completions") == 2


def test_an_error_body_that_is_not_json(upstream, monkeypatch):
    # A 200 with something other than a JSON object is an APIError, not a cached answer.
    llmstash.cache = Cache()
    monkeypatch.setattr(upstream, "answer", lambda path, body, number: ["not", "an", "object"])
    with pytest.raises(llmstash.APIError) as info:
        llmstash.completion(model="gpt-3.5-turbo", messages=MSGS, api_base=upstream.base_url)
    assert info.value.status_code == 200
    assert "not a JSON object" in str(info.value)
    assert len(llmstash.cache.storage) == 0


# ----- callbacks ------------------------------------------------------------------------------


def test_callbacks_see_a_miss_then_a_hit_and_never_the_api_key(upstream):
    llmstash.cache = Cache()
    recorder = Recorder()
    llmstash.callbacks = [recorder]
    kwargs = dict(model="gpt-3.5-turbo", messages=MSGS, temperature=0.3, api_base=upstream.base_url, api_key=SECRET)
    first = llmstash.completion(**kwargs)
    second = llmstash.completion(**kwargs)
    assert [kind for kind, _, _ in recorder.events] == ["success", "success"]
    (_, miss_kwargs, miss_obj), (_, hit_kwargs, hit_obj) = recorder.events
    assert miss_kwargs["cache_hit"] is False and hit_kwargs["cache_hit"] is True
    assert miss_obj is first and hit_obj is second
    assert miss_kwargs["cache_key"] == hit_kwargs["cache_key"] == first._hidden_params["cache_key"]
    assert miss_kwargs["model"] == "gpt-3.5-turbo"
    assert miss_kwargs["call_type"] == "completion"
    assert miss_kwargs["messages"] == MSGS
    assert miss_kwargs["optional_params"] == {"temperature": 0.3}
    for _, event_kwargs, _ in recorder.events:
        assert "api_key" not in event_kwargs
        assert SECRET not in repr(event_kwargs)
    assert SECRET not in repr(first._hidden_params)
    stored = llmstash.cache.storage.get(first._hidden_params["cache_key"])
    assert stored is not None and SECRET.encode() not in stored


def test_async_callbacks_see_a_miss_then_a_hit(upstream):
    llmstash.cache = Cache()
    recorder = AsyncRecorder()
    llmstash.callbacks = [recorder]

    async def scenario():
        for _ in range(2):
            await llmstash.aembedding(model="text-embedding-3-small", input="x", api_base=upstream.base_url, api_key=SECRET)

    asyncio.run(scenario())
    assert [(kind, kw["cache_hit"]) for kind, kw, _ in recorder.events] == [("async_success", False), ("async_success", True)]
    assert recorder.events[0][1]["call_type"] == "aembedding"
    assert recorder.events[0][1]["input"] == "x"
    assert all(SECRET not in repr(kw) for _, kw, _ in recorder.events)


def test_async_calls_reach_sync_only_handlers(upstream):
    recorder = Recorder()
    llmstash.callbacks = [recorder]
    asyncio.run(llmstash.acompletion(model="gpt-3.5-turbo", messages=MSGS, api_base=upstream.base_url))
    assert [(kind, kw["cache_hit"], kw["cache_key"]) for kind, kw, _ in recorder.events] == [("success", False, None)]


def test_sync_calls_do_not_reach_async_handlers(upstream):
    recorder = AsyncRecorder()
    llmstash.callbacks = [recorder]
    llmstash.completion(model="gpt-3.5-turbo", messages=MSGS, api_base=upstream.base_url)
    assert recorder.events == []


@pytest.mark.parametrize("caller", ["sync", "async"])
def test_log_failure_event_receives_the_failure(upstream, caller):
    llmstash.cache = Cache()
    recorder = Recorder()
    llmstash.callbacks = [recorder]
    upstream.fail_next(429)
    kwargs = dict(model="gpt-3.5-turbo", messages=MSGS, api_base=upstream.base_url, api_key=SECRET)
    with pytest.raises(llmstash.RateLimitError) as info:
        if caller == "sync":
            llmstash.completion(**kwargs)
        else:
            asyncio.run(llmstash.acompletion(**kwargs))
    assert len(recorder.events) == 1
    kind, event_kwargs, response_obj = recorder.events[0]
    assert kind == "failure" and response_obj is None
    assert event_kwargs["exception"] is info.value
    assert event_kwargs["cache_hit"] is False
    assert event_kwargs["cache_key"] is not None
    assert SECRET not in repr({k: v for k, v in event_kwargs.items() if k != "exception"})


def test_async_failure_handler(upstream):
    recorder = AsyncRecorder()
    llmstash.callbacks = [recorder]
    upstream.fail_next(503)
    with pytest.raises(llmstash.ServiceUnavailableError):
        asyncio.run(llmstash.atext_completion(model="gpt-3.5-turbo-instruct", prompt="x", api_base=upstream.base_url))
    assert [kind for kind, _, _ in recorder.events] == ["async_failure"]
    assert isinstance(recorder.events[0][1]["exception"], llmstash.ServiceUnavailableError)


class Exploding(CustomLogger):
    def log_success_event(self, kwargs, response_obj, start_time, end_time):
        raise RuntimeError("handler bug")

    def log_failure_event(self, kwargs, response_obj, start_time, end_time):
        raise RuntimeError("handler bug")


@pytest.mark.parametrize("caller", ["sync", "async"])
def test_an_exception_in_a_callback_does_not_fail_the_call(upstream, caller, caplog):
    llmstash.cache = Cache()
    recorder = Recorder()
    llmstash.callbacks = [Exploding(), recorder]

    def run():
        kwargs = dict(model="gpt-3.5-turbo", messages=MSGS, api_base=upstream.base_url)
        if caller == "sync":
            return llmstash.completion(**kwargs)
        return asyncio.run(llmstash.acompletion(**kwargs))

    with caplog.at_level(logging.WARNING, logger="llmstash"):
        first = run()
        second = run()
    assert not hit(first) and hit(second) and second.id == first.id
    assert [kw["cache_hit"] for _, kw, _ in recorder.events] == [False, True]  # later handlers still run
    assert any("Exploding" in record.getMessage() and "RuntimeError" in record.getMessage() for record in caplog.records)
    # A raising failure handler does not replace the upstream's error either.
    upstream.fail_next(500)
    with pytest.raises(llmstash.InternalServerError):
        llmstash.completion(model="gpt-3.5-turbo", messages=[{"role": "user", "content": "other"}], api_base=upstream.base_url)


def test_callbacks_that_are_not_custom_loggers_are_skipped(upstream, caplog):
    recorder = Recorder()
    llmstash.callbacks = ["langfuse", recorder]
    with caplog.at_level(logging.WARNING, logger="llmstash"):
        r = llmstash.completion(model="gpt-3.5-turbo", messages=MSGS, api_base=upstream.base_url)
    assert r.choices[0].message.content
    assert len(recorder.events) == 1


# ----- refused --------------------------------------------------------------------------------


def test_stream_false_is_an_ordinary_call(upstream):
    llmstash.cache = Cache()
    first = llmstash.completion(model="gpt-3.5-turbo", messages=MSGS, stream=False, api_base=upstream.base_url)
    second = llmstash.completion(model="gpt-3.5-turbo", messages=MSGS, api_base=upstream.base_url)
    assert hit(second) and second.id == first.id  # stream is not keyed


def test_secret_named_parameters_are_neither_sent_in_the_body_nor_keyed(upstream):
    llmstash.cache = Cache()
    base = dict(model="gpt-3.5-turbo", messages=MSGS, api_base=upstream.base_url)
    first = llmstash.completion(**base, aws_secret_access_key="aws-s3cr3t", aws_access_key_id="AKIAEXAMPLE")
    second = llmstash.completion(**base, aws_secret_access_key="other", aws_access_key_id="AKIAOTHER")
    assert hit(second) and second.id == first.id
    body = upstream.calls[0].body
    assert "aws_secret_access_key" not in body and "aws_access_key_id" not in body
    assert "aws-s3cr3t" not in repr(upstream.calls[0].body)


def test_azure_ad_token_is_sent_as_a_bearer_header_not_in_the_body(upstream):
    llmstash.completion(model="azure/dep", messages=MSGS, api_base=upstream.azure_base, azure_ad_token="ad-token-1")
    recorded = upstream.calls[0]
    assert recorded.headers["authorization"] == "Bearer ad-token-1"
    assert "azure_ad_token" not in recorded.body


def test_a_parameter_that_cannot_be_keyed_is_a_clear_error_naming_it(upstream):
    llmstash.cache = Cache()
    with pytest.raises(llmstash.ConfigurationError, match=r"frobnicate=.*JSON-compatible"):
        llmstash.completion(model="gpt-3.5-turbo", messages=MSGS, api_base=upstream.base_url, frobnicate=object())
    assert upstream.call_count() == 0


def test_mock_response_works_with_any_provider_prefix():
    llmstash.cache = Cache()
    first = llmstash.completion(model="anthropic/claude-3", messages=MSGS, mock_response="hi")
    second = llmstash.completion(model="anthropic/claude-3", messages=MSGS, mock_response="hi")
    assert first.choices[0].message.content == "hi"
    assert hit(second) and second.id == first.id
