"""Sending a described request upstream: the body, headers and timeout, or the mock answer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from llmstash._core import streams
from llmstash._core.keys import is_keyed
from llmstash._request import PAYLOAD_OF_FAMILY, Request
from llmstash._streaming import as_async
from llmstash.exceptions import ConfigurationError
from llmstash.providers import http, mock

MAX_TIMEOUT = 1e9
"""Longer timeouts (inf) are cut to this (~32 years): sockets and locks cannot wait longer."""
NOT_IN_BODY = frozenset({"extra_body", "mock_response", "stream", "stream_options"})
"""Keyed or streaming parameters that are not copied into the body as they are."""


def timeout(request: Request) -> float:
    value = request.params.get("timeout", request.params.get("request_timeout"))
    if value is None:
        return http.DEFAULT_TIMEOUT
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:  # not > 0: NaN too
        raise ConfigurationError(f"timeout must be a positive number of seconds, got {value!r}")
    return float(min(value, MAX_TIMEOUT))


def _headers(request: Request) -> dict[str, str] | None:
    headers = dict(request.params.get("extra_headers") or request.params.get("headers") or {})
    if request.params.get("organization"):
        headers["OpenAI-Organization"] = request.params["organization"]
    if request.params.get("azure_ad_token"):
        headers["Authorization"] = f"Bearer {request.params['azure_ad_token']}"
    return headers or None


def body(request: Request, payload: Any = None, usage: bool = False) -> dict[str, Any]:
    """The JSON body: what is sent is what is keyed (transport options and secrets are in neither).
    ``payload`` replaces the request's own (embedding batches send only their missing items);
    ``usage`` asks a stream for its usage chunk."""
    sent = {"model": request.route.model, PAYLOAD_OF_FAMILY[request.family]: request.payload if payload is None else payload}
    for name, value in request.params.items():
        if is_keyed(name) and name not in NOT_IN_BODY:
            sent[name] = value
    extra = request.params.get("extra_body")
    if extra:
        sent.update(extra)
    if request.stream:
        sent["stream"] = True
        options = dict(request.params.get("stream_options") or {})
        if usage:
            options["include_usage"] = True
        if options:
            sent["stream_options"] = options
    return sent


def _fields(request: Request) -> dict[str, Any]:
    """Form fields of a transcription: the model and the keyed parameters."""
    sent = body(request)
    sent.pop("file", None)
    return sent


def _mocked(request: Request, payload: Any) -> dict[str, Any] | None:
    answer = request.params.get("mock_response")
    if answer is None:
        return None
    return mock.respond(request.family, request.route.model, request.payload if payload is None else payload, answer)


def call(request: Request, payload: Any = None) -> dict[str, Any]:
    """The upstream's JSON answer (or the mock's)."""
    mocked = _mocked(request, payload)
    if mocked is not None:
        return mocked
    if request.upload is not None:
        return http.post_audio(request.route, _fields(request), request.upload, timeout(request), _headers(request))
    return http.post(request.route, request.family, body(request, payload), timeout(request), _headers(request))


async def acall(request: Request, payload: Any = None) -> dict[str, Any]:
    mocked = _mocked(request, payload)
    if mocked is not None:
        return mocked
    if request.upload is not None:
        return await http.apost_audio(request.route, _fields(request), request.upload, timeout(request), _headers(request))
    return await http.apost(request.route, request.family, body(request, payload), timeout(request), _headers(request))


def open_stream(request: Request, usage: bool) -> Iterator[dict[str, Any]]:
    """Chunks of a streamed answer; error statuses raise here, before the first chunk."""
    mocked = _mocked(request, None)
    if mocked is not None:
        return streams.replay(request.family, mocked, include_usage=True)
    return http.stream(request.route, request.family, body(request, usage=usage), timeout(request), _headers(request))


async def aopen_stream(request: Request, usage: bool) -> AsyncIterator[dict[str, Any]]:
    mocked = _mocked(request, None)
    if mocked is not None:
        return as_async(streams.replay(request.family, mocked, include_usage=True))
    return await http.astream(request.route, request.family, body(request, usage=usage), timeout(request), _headers(request))
