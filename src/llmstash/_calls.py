"""The call functions: ``completion``, ``embedding``, ``text_completion`` and their async twins.

Each call is described once (:func:`build_request`), asks the active cache for a plan, and then
either returns a hit or calls the upstream and stores the answer. The sync and async paths
differ only in the awaited I/O.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import llmstash
from llmstash import _callbacks
from llmstash._core.keys import is_keyed
from llmstash._request import PAYLOAD_OF_FAMILY, Request, build_request
from llmstash.caching.cache import Cache, Plan
from llmstash.exceptions import ConfigurationError
from llmstash.providers import http, mock
from llmstash.types import RESPONSE_KINDS, EmbeddingResponse, ModelResponse, OpenAIObject, TextCompletionResponse

NOT_IN_BODY = frozenset({"extra_body", "mock_response"})
"""Keyed parameters that are not body fields (``extra_body`` is merged into the body instead)."""


def _timeout(request: Request) -> float:
    value = request.params.get("timeout", request.params.get("request_timeout"))
    if value is None:
        return http.DEFAULT_TIMEOUT
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigurationError(f"timeout must be a positive number of seconds, got {value!r}")
    return float(value)


def _headers(request: Request) -> dict[str, str] | None:
    headers = dict(request.params.get("extra_headers") or request.params.get("headers") or {})
    if request.params.get("organization"):
        headers["OpenAI-Organization"] = request.params["organization"]
    if request.params.get("azure_ad_token"):
        headers["Authorization"] = f"Bearer {request.params['azure_ad_token']}"
    return headers or None


def _body(request: Request) -> dict[str, Any]:
    body = {"model": request.route.model, PAYLOAD_OF_FAMILY[request.family]: request.payload}
    for name, value in request.params.items():
        # What is sent is what is keyed: transport options and secrets are in neither.
        if is_keyed(name) and name not in NOT_IN_BODY:
            body[name] = value
    extra = request.params.get("extra_body")
    if extra:
        body.update(extra)
    return body


def _response(request: Request, body: dict[str, Any], cache_key: str | None, hit: bool) -> OpenAIObject:
    response = RESPONSE_KINDS[request.family](body)
    response._hidden_params = {"cache_hit": hit, "cache_key": cache_key, "model": request.model}
    return response


def _call_upstream(request: Request) -> dict[str, Any]:
    mocked = request.params.get("mock_response")
    if mocked is not None:
        return mock.respond(request.family, request.route.model, request.payload, mocked)
    return http.post(request.route, request.family, _body(request), _timeout(request), _headers(request))


async def _acall_upstream(request: Request) -> dict[str, Any]:
    mocked = request.params.get("mock_response")
    if mocked is not None:
        return mock.respond(request.family, request.route.model, request.payload, mocked)
    return await http.apost(request.route, request.family, _body(request), _timeout(request), _headers(request))


class _Events:
    """Callback delivery for one call; does nothing when ``llmstash.callbacks`` is empty."""

    __slots__ = ("handlers", "key", "request", "start")

    def __init__(self, request: Request, key: str | None) -> None:
        self.handlers = _callbacks.handlers(llmstash.callbacks) if llmstash.callbacks else None
        self.request = request
        self.key = key
        self.start = datetime.now() if self.handlers else datetime.min

    def sync(self, response: Any, hit: bool, exc: BaseException | None = None) -> None:
        if self.handlers:
            kwargs = _callbacks.event_kwargs(self.request, hit, self.key, exc)
            _callbacks.notify(self.handlers, kwargs, response, self.start, failed=exc is not None)

    async def asynchronous(self, response: Any, hit: bool, exc: BaseException | None = None) -> None:
        if self.handlers:
            kwargs = _callbacks.event_kwargs(self.request, hit, self.key, exc)
            await _callbacks.anotify(self.handlers, kwargs, response, self.start, failed=exc is not None)


def _prepare(call_type: str, kwargs: dict[str, Any]) -> tuple[Request, Cache | None, Plan | None]:
    request = build_request(call_type, kwargs)
    if request.params.get("stream"):
        raise ConfigurationError("stream=True is not supported by this release of llmstash; call without stream")
    cache = llmstash.cache
    plan = cache.plan(request) if cache is not None else None
    return request, cache, plan


def run(call_type: str, kwargs: dict[str, Any]) -> Any:
    request, cache, plan = _prepare(call_type, kwargs)
    events = _Events(request, plan.key if plan else None)
    if cache is not None and plan is not None and plan.read:
        entry = cache.read(plan, request)
        if entry is not None:
            response = _response(request, entry.data, plan.key, True)
            events.sync(response, True)
            return response
    try:
        body = _call_upstream(request)
    except Exception as exc:
        events.sync(None, False, exc)
        raise
    response = _response(request, body, events.key, False)
    if cache is not None and plan is not None and plan.write:
        cache.write(plan, request, response)
    events.sync(response, False)
    return response


async def arun(call_type: str, kwargs: dict[str, Any]) -> Any:
    request, cache, plan = _prepare(call_type, kwargs)
    events = _Events(request, plan.key if plan else None)
    if cache is not None and plan is not None and plan.read:
        entry = await cache.aread(plan, request)
        if entry is not None:
            response = _response(request, entry.data, plan.key, True)
            await events.asynchronous(response, True)
            return response
    try:
        body = await _acall_upstream(request)
    except Exception as exc:
        await events.asynchronous(None, False, exc)
        raise
    response = _response(request, body, events.key, False)
    if cache is not None and plan is not None and plan.write:
        await cache.awrite(plan, request, response)
    await events.asynchronous(response, False)
    return response


def completion(model: str, messages: list[dict[str, Any]], **kwargs: Any) -> ModelResponse:
    """A chat completion, answered from the cache when it holds this request.

    Takes the OpenAI chat parameters (``temperature``, ``max_tokens``, ``tools``, ...) plus
    ``api_base``/``base_url``, ``api_key``, ``api_version``, ``timeout``, ``extra_headers``,
    ``extra_body``, ``mock_response``, and the cache arguments ``caching=True/False`` and
    ``cache={"no-cache", "no-store", "ttl", "s-maxage", "namespace", "use-cache"}``.
    """
    result: ModelResponse = run("completion", {"model": model, "messages": messages, **kwargs})
    return result


async def acompletion(model: str, messages: list[dict[str, Any]], **kwargs: Any) -> ModelResponse:
    """The async twin of :func:`completion`."""
    result: ModelResponse = await arun("acompletion", {"model": model, "messages": messages, **kwargs})
    return result


def text_completion(model: str, prompt: Any, **kwargs: Any) -> TextCompletionResponse:
    """A legacy text completion (``/v1/completions``), cached like :func:`completion`."""
    result: TextCompletionResponse = run("text_completion", {"model": model, "prompt": prompt, **kwargs})
    return result


async def atext_completion(model: str, prompt: Any, **kwargs: Any) -> TextCompletionResponse:
    """The async twin of :func:`text_completion`."""
    result: TextCompletionResponse = await arun("atext_completion", {"model": model, "prompt": prompt, **kwargs})
    return result


def embedding(model: str, input: Any, **kwargs: Any) -> EmbeddingResponse:
    """Embeddings for ``input`` (a string or a list), cached like :func:`completion`."""
    result: EmbeddingResponse = run("embedding", {"model": model, "input": input, **kwargs})
    return result


async def aembedding(model: str, input: Any, **kwargs: Any) -> EmbeddingResponse:
    """The async twin of :func:`embedding`."""
    result: EmbeddingResponse = await arun("aembedding", {"model": model, "input": input, **kwargs})
    return result
