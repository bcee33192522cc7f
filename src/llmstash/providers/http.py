"""HTTP to OpenAI-compatible and Azure OpenAI endpoints, on httpx (imported on first use).

One pooled ``httpx.Client`` per process and one ``httpx.AsyncClient`` per event loop. Error
statuses become :mod:`llmstash.exceptions` classes carrying the status code and the upstream's
own error message.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import orjson

from llmstash.exceptions import APIConnectionError, APIError, ConfigurationError, Timeout, error_for_status
from llmstash.providers.routing import Route

if TYPE_CHECKING:
    import asyncio

    import httpx

DEFAULT_TIMEOUT = 600.0
PATHS = {"chat": "chat/completions", "text": "completions", "embedding": "embeddings", "transcription": "audio/transcriptions"}

_sync_client: httpx.Client | None = None
_sync_lock = threading.Lock()
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = weakref.WeakKeyDictionary()
# asyncio is imported on first async call: it costs ~25 ms of import time


def _limits() -> Any:
    import httpx

    return httpx.Limits(max_connections=200, max_keepalive_connections=50)


def sync_client() -> httpx.Client:
    global _sync_client
    if _sync_client is None:
        with _sync_lock:
            if _sync_client is None:
                import httpx

                _sync_client = httpx.Client(limits=_limits())
    return _sync_client


def async_client() -> httpx.AsyncClient:
    import asyncio

    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        import httpx

        client = httpx.AsyncClient(limits=_limits())
        _async_clients[loop] = client
    return client


def build(route: Route, family: str, headers: dict[str, str] | None, json_body: bool = True) -> tuple[str, dict[str, str]]:
    """URL and headers for a request of ``family`` on ``route``."""
    path = PATHS[family]
    all_headers = {"Content-Type": "application/json"} if json_body else {}
    if route.provider == "azure":
        url = f"{route.endpoint}/openai/deployments/{route.model}/{path}?api-version={route.api_version}"
        if key := route.credential():
            all_headers["api-key"] = key
    else:
        url = f"{route.endpoint}/{path}"
        if key := route.credential():
            all_headers["Authorization"] = f"Bearer {key}"
    if headers:
        all_headers.update(headers)
    return url, all_headers


def _json(body: dict[str, Any]) -> bytes:
    """The request body as JSON; a value JSON cannot carry (a string with a lone surrogate, which
    is not valid UTF-8, or an object) is a ConfigurationError naming its parameter."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError as exc:
        for name, value in body.items():
            try:
                orjson.dumps(value)
            except orjson.JSONEncodeError:
                raise ConfigurationError(
                    f"{name}= holds a value that cannot be sent upstream as JSON ({exc}); "
                    "pass JSON values with valid UTF-8 strings (no lone surrogates)"
                ) from None
        raise ConfigurationError(f"the request cannot be sent upstream as JSON ({exc})") from None


def _error_message(body: Any, fallback: str) -> str:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return fallback


def parse(route: Route, status: int, content: bytes) -> dict[str, Any]:
    """The JSON body of an upstream answer, or the matching APIError."""
    try:
        body = orjson.loads(content) if content else None
    except orjson.JSONDecodeError:
        body = None
    if status >= 400:
        cls = error_for_status(status)
        message = _error_message(body, f"the upstream answered HTTP {status}")
        raise cls(message, status_code=status, model=route.model, llm_provider=route.provider, body=body)
    if not isinstance(body, dict):
        raise APIError(
            f"the upstream answered HTTP {status} with a body that is not a JSON object",
            status_code=status,
            model=route.model,
            llm_provider=route.provider,
        )
    return body


def _transport_error(route: Route, exc: Exception) -> APIError:
    import httpx

    where = f"{route.provider} endpoint for model {route.model!r}"
    if isinstance(exc, httpx.TimeoutException):
        return Timeout(
            f"no answer from the {where} in time ({type(exc).__name__})", model=route.model, llm_provider=route.provider
        )
    return APIConnectionError(
        f"could not reach the {where}: {type(exc).__name__}", model=route.model, llm_provider=route.provider
    )


def post(route: Route, family: str, body: dict[str, Any], timeout: float, headers: dict[str, str] | None) -> dict[str, Any]:
    import httpx

    url, all_headers = build(route, family, headers)
    try:
        response = sync_client().post(url, content=_json(body), headers=all_headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise _transport_error(route, exc) from exc
    return parse(route, response.status_code, response.content)


async def apost(
    route: Route, family: str, body: dict[str, Any], timeout: float, headers: dict[str, str] | None
) -> dict[str, Any]:
    import httpx

    url, all_headers = build(route, family, headers)
    try:
        response = await async_client().post(url, content=_json(body), headers=all_headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise _transport_error(route, exc) from exc
    return parse(route, response.status_code, response.content)


def _sse_chunk(line: str) -> dict[str, Any] | None:
    """The JSON chunk in one server-sent-event line, or None for other lines."""
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if not data or data == "[DONE]":
        return None
    chunk = orjson.loads(data)
    return chunk if isinstance(chunk, dict) else None


def _stream_error(route: Route, exc: Exception) -> APIError:
    return APIConnectionError(
        f"the {route.provider} stream for model {route.model!r} broke off: {type(exc).__name__}",
        model=route.model,
        llm_provider=route.provider,
    )


def stream(
    route: Route, family: str, body: dict[str, Any], timeout: float, headers: dict[str, str] | None
) -> Iterator[dict[str, Any]]:
    """Send a streamed request; error statuses raise here, then chunks arrive as they are read."""
    import httpx

    url, all_headers = build(route, family, headers)
    client = sync_client()
    try:
        response = client.send(
            client.build_request("POST", url, content=_json(body), headers=all_headers, timeout=timeout), stream=True
        )
    except httpx.HTTPError as exc:
        raise _transport_error(route, exc) from exc
    if response.status_code >= 400:
        response.read()
        response.close()
        parse(route, response.status_code, response.content)

    def chunks() -> Iterator[dict[str, Any]]:
        try:
            yield {}  # the priming stop: from here on, closing or dropping it closes the response
            for line in response.iter_lines():
                chunk = _sse_chunk(line)
                if chunk is not None:
                    yield chunk
        except httpx.HTTPError as exc:
            raise _stream_error(route, exc) from exc
        finally:
            response.close()

    primed = chunks()
    next(primed)
    return primed


async def astream(
    route: Route, family: str, body: dict[str, Any], timeout: float, headers: dict[str, str] | None
) -> AsyncIterator[dict[str, Any]]:
    """The async twin of :func:`stream`."""
    import httpx

    url, all_headers = build(route, family, headers)
    client = async_client()
    try:
        request = client.build_request("POST", url, content=_json(body), headers=all_headers, timeout=timeout)
        response = await client.send(request, stream=True)
    except httpx.HTTPError as exc:
        raise _transport_error(route, exc) from exc
    if response.status_code >= 400:
        await response.aread()
        await response.aclose()
        parse(route, response.status_code, response.content)

    async def chunks() -> AsyncIterator[dict[str, Any]]:
        try:
            yield {}  # the priming stop (see stream)
            async for line in response.aiter_lines():
                chunk = _sse_chunk(line)
                if chunk is not None:
                    yield chunk
        except httpx.HTTPError as exc:
            raise _stream_error(route, exc) from exc
        finally:
            await response.aclose()

    primed = chunks()
    await primed.__anext__()
    return primed


def _transcription(route: Route, response: httpx.Response) -> dict[str, Any]:
    """A transcription answer: JSON, or plain text (``response_format`` text, srt, vtt) as ``{"text": ...}``."""
    if response.status_code < 400 and "json" not in response.headers.get("content-type", ""):
        return {"text": response.text}
    return parse(route, response.status_code, response.content)


def _form(fields: dict[str, Any]) -> dict[str, Any]:
    _json(fields)  # a field that cannot be sent is a clear error naming it
    return {
        name: value if isinstance(value, (str, list)) else orjson.dumps(value).decode().strip('"')
        for name, value in fields.items()
    }


def post_audio(
    route: Route, fields: dict[str, Any], upload: tuple[str, bytes], timeout: float, headers: dict[str, str] | None
) -> dict[str, Any]:
    """A multipart transcription request: ``fields`` as form fields, ``upload`` as the file."""
    import httpx

    url, all_headers = build(route, "transcription", headers, json_body=False)
    try:
        response = sync_client().post(url, data=_form(fields), files={"file": upload}, headers=all_headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise _transport_error(route, exc) from exc
    return _transcription(route, response)


async def apost_audio(
    route: Route, fields: dict[str, Any], upload: tuple[str, bytes], timeout: float, headers: dict[str, str] | None
) -> dict[str, Any]:
    import httpx

    url, all_headers = build(route, "transcription", headers, json_body=False)
    try:
        response = await async_client().post(
            url, data=_form(fields), files={"file": upload}, headers=all_headers, timeout=timeout
        )
    except httpx.HTTPError as exc:
        raise _transport_error(route, exc) from exc
    return _transcription(route, response)
