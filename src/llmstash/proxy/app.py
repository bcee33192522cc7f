"""The ASGI app: OpenAI-compatible routes in front of ``llmstash.Router``, plus admin routes,
``/metrics`` and the status page.

Every call goes through the router's async methods (``acompletion``, ``atext_completion``,
``aembedding``, ``atranscription``), so the proxy has the library's single flight, fail-open
reads and writes and stream replay. Answers carry ``x-llmstash-cache: HIT|MISS`` and, when the
cache was consulted, ``x-llmstash-cache-key``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import orjson
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from llmstash._core.keys import is_keyed
from llmstash.caching.cache import Cache
from llmstash.exceptions import APIError, LlmstashError
from llmstash.proxy import ui
from llmstash.proxy.auth import ADMIN_COOKIE, Auth, Caller
from llmstash.proxy.config import ProxyConfig, load_config
from llmstash.proxy.controls import request_controls
from llmstash.proxy.errors import ProxyError, error_body, error_response
from llmstash.proxy.metrics import Metrics
from llmstash.router import Router

logger = logging.getLogger("llmstash.proxy")

CONFIG_ENV = "LLMSTASH_PROXY_CONFIG"
"""The config file of ``app_from_environment`` (how ``--workers N`` hands it to each worker)."""
ACCEPTED_UNKEYED = frozenset({"stream", "stream_options", "cache", "caching", "metadata"})
"""Request fields that are not part of the key but are accepted; other unkeyed fields (api_base,
api_key, timeout, extra_headers, ...) are transport settings that only the config may set."""
REFUSED = frozenset({"mock_response", "self"})
ENTRY_COUNT_SECONDS = 15.0
"""How often the entry count (status page, /metrics, /cache/stats) is refreshed when it is cheap
(memory, disk); backends that must list their keys (Redis SCAN) are recounted every minute."""
ENTRY_LISTING_SECONDS = 60.0
MAX_BODY_BYTES = 64 * 1024 * 1024
"""Larger requests are refused (413) before they are read."""
TEXT_FORMATS = ("text", "srt", "vtt")
HIT, MISS = "HIT", "MISS"


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status, headers, media_type="application/json")


def _countable(cache: Cache) -> Any:
    """The storage to count, and whether its size is one cheap call (no namespace to filter)."""
    storage: Any = getattr(cache.storage, "shared", cache.storage)
    return storage, cache.namespace is None and hasattr(storage, "__len__")


def count_entries(cache: Cache, limit: int = 1_000_000) -> int | None:
    """Entries in the cache's namespace, up to ``limit`` (None when the backend cannot list them)."""
    storage, cheap = _countable(cache)
    if cheap:
        return len(storage)
    prefix = f"{cache.namespace}:" if cache.namespace else ""
    try:
        count = 0
        for _ in storage.keys(prefix):
            count += 1
            if count >= limit:
                break
        return count
    except NotImplementedError:
        return None


class Proxy:
    """The proxy's state: the router (and its cache), the keys and the counters."""

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self.router = Router(
            config.model_list,
            caching_groups=config.caching_groups or None,
            cache_responses=config.cache_params is not None,
            cache_kwargs=config.cache_params,
            timeout=config.timeout,
        )
        self.cache: Cache | None = self.router.cache
        self.backend = self.cache.type if self.cache is not None else None
        self.auth = Auth(config.master_key, config.virtual_keys, config.cache_scope == "per_key")
        self.metrics = Metrics(config.prices)
        self.models = frozenset(config.model_names)
        self._entries: tuple[float, int | None] = (0.0, None)
        self._count_every = ENTRY_COUNT_SECONDS if self.cache is None or _countable(self.cache)[1] else ENTRY_LISTING_SECONDS

    # ----- helpers ---------------------------------------------------------------------------------

    def _model(self, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise ProxyError(400, "model is required: one of the model_name values in the config", param="model")
        if value not in self.models:
            raise ProxyError(
                404, f"model {value!r} is not served here; models: {sorted(self.models)}", param="model", code="model_not_found"
            )
        return value

    @staticmethod
    def _check_params(params: dict[str, Any]) -> None:
        for name in params:
            if name in REFUSED or not (is_keyed(name) or name in ACCEPTED_UNKEYED):
                raise ProxyError(
                    400,
                    f"parameter {name!r} is not accepted by the proxy: endpoints, credentials and transport options come from its config",
                    param=name,
                )

    def _kwargs(self, request: Request, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        self._check_params(params)
        controls = request_controls(request.headers, params.pop("cache", None), caller.namespace)
        if controls is not None:
            params["cache"] = controls
        return params

    @staticmethod
    def _check_size(request: Request) -> None:
        length = request.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            raise ProxyError(413, f"the request body must be at most {MAX_BODY_BYTES // 2**20} MiB", code="request_too_large")

    @classmethod
    async def _body(cls, request: Request) -> dict[str, Any]:
        cls._check_size(request)
        raw = await request.body()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ProxyError(400, "the request body must be a JSON object") from None
        if not isinstance(body, dict):
            raise ProxyError(400, "the request body must be a JSON object")
        return body

    @staticmethod
    def _headers(hidden: dict[str, Any]) -> dict[str, str]:
        headers = {"x-llmstash-cache": HIT if hidden.get("cache_hit") else MISS}
        key = hidden.get("cache_key")
        if key:  # keys are ASCII unless the config's namespace is not: then percent-encoded (UTF-8)
            headers["x-llmstash-cache-key"] = key if key.isascii() else quote(key, safe=":/")
        if "total_items" in hidden:
            headers["x-llmstash-cached-items"] = f"{hidden['cached_items']}/{hidden['total_items']}"
        return headers

    # ----- the OpenAI routes -----------------------------------------------------------------------

    async def call(self, request: Request, route: str, payload_name: str) -> Response:
        caller = self.auth.caller(request)
        body = await self._body(request)
        model = self._model(body.pop("model", None))
        if payload_name not in body:
            raise ProxyError(400, f"{payload_name} is required", param=payload_name)
        payload = body.pop(payload_name)
        kwargs = self._kwargs(request, caller, body)
        stream = bool(kwargs.get("stream"))
        if stream and route == "embedding":
            raise ProxyError(400, "stream is not supported for embeddings", param="stream")
        wants_usage = False
        if stream:  # ask for usage (for the tokens-saved figures); pass it on only if asked for
            options = kwargs.get("stream_options")
            if options is not None and not isinstance(options, dict):
                raise ProxyError(400, "stream_options must be an object", param="stream_options")
            wants_usage = bool((options or {}).get("include_usage"))
            kwargs["stream_options"] = {**(options or {}), "include_usage": True}
        methods: dict[str, Callable[..., Awaitable[Any]]] = {
            "chat": self.router.acompletion,
            "text": self.router.atext_completion,
            "embedding": self.router.aembedding,
        }
        method = methods[route]
        started = time.perf_counter()
        try:
            result = await method(model, payload, **kwargs)
        except APIError as exc:
            self.metrics.error(route, model, exc.status_code if isinstance(exc.status_code, int) else 502)
            raise
        hidden = result._hidden_params
        if stream:
            return self._stream(route, model, result, wants_usage, started)
        self.metrics.request(
            route,
            model,
            bool(hidden.get("cache_hit")),
            time.perf_counter() - started,
            hidden.get("cache_key"),
            result._data.get("usage"),
        )
        return Response(orjson.dumps(result._data), 200, self._headers(hidden), media_type="application/json")

    def _stream(self, route: str, model: str, stream: Any, wants_usage: bool, started: float) -> Response:
        hidden = stream._hidden_params

        async def events() -> AsyncIterator[bytes]:
            usage = None
            completed = False
            try:
                async for chunk in stream:
                    data = chunk._data
                    if data.get("usage") is not None:
                        usage = data["usage"]
                        if not data.get("choices") and not wants_usage:
                            continue
                    yield b"data: " + orjson.dumps(data) + b"\n\n"
                completed = True
                yield b"data: [DONE]\n\n"
            except APIError as exc:
                status = exc.status_code if isinstance(exc.status_code, int) else 502
                self.metrics.error(route, model, status)
                yield b"data: " + orjson.dumps(error_body(status, exc.message)) + b"\n\n"
            except Exception as exc:  # the status line is sent already: the error goes in the stream
                _log_unexpected(exc, f"{route} stream")
                yield b"data: " + orjson.dumps(error_body(500, f"internal error ({type(exc).__name__})")) + b"\n\n"
            finally:
                await stream.aclose()
                if completed:
                    self.metrics.request(
                        route, model, bool(hidden.get("cache_hit")), time.perf_counter() - started, hidden.get("cache_key"), usage
                    )

        headers = {**self._headers(hidden), "cache-control": "no-cache"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    async def transcription(self, request: Request) -> Response:
        caller = self.auth.caller(request)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ProxyError(400, "send the audio as multipart/form-data with a file field", param="file")
        self._check_size(request)
        async with request.form(max_files=1, max_fields=100) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ProxyError(400, "file is required: the audio, as a multipart file field", param="file")
            audio = (upload.filename or "audio", await upload.read())
            fields: dict[str, Any] = {}
            for name in form:
                if name == "file":
                    continue
                values = [value for value in form.getlist(name) if isinstance(value, str)]
                fields[name] = values[0] if len(values) == 1 else values
        model = self._model(fields.pop("model", None))
        if "cache" in fields:
            try:
                fields["cache"] = orjson.loads(fields["cache"])
            except (orjson.JSONDecodeError, TypeError):
                raise ProxyError(400, "cache must be a JSON object of controls", param="cache") from None
        kwargs = self._kwargs(request, caller, fields)
        started = time.perf_counter()
        try:
            result = await self.router.atranscription(model, audio, **kwargs)
        except APIError as exc:
            self.metrics.error("transcription", model, exc.status_code if isinstance(exc.status_code, int) else 502)
            raise
        hidden = result._hidden_params
        self.metrics.request(
            "transcription", model, bool(hidden.get("cache_hit")), time.perf_counter() - started, hidden.get("cache_key"), None
        )
        if fields.get("response_format") in TEXT_FORMATS:
            return PlainTextResponse(str(result._data.get("text", "")), headers=self._headers(hidden))
        return Response(orjson.dumps(result._data), 200, self._headers(hidden), media_type="application/json")

    async def models_list(self, request: Request) -> Response:
        self.auth.caller(request)
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "llmstash"} for name in self.config.model_names]
        return _json({"object": "list", "data": data})

    # ----- operations ------------------------------------------------------------------------------

    async def entries(self) -> int | None:
        """The cache's entry count, recounted at most every 15 s (60 s where keys must be listed)."""
        counted_at, count = self._entries
        if self.cache is None:
            return None
        if time.monotonic() - counted_at > self._count_every or count is None:
            try:
                count = await asyncio.to_thread(count_entries, self.cache)
            except Exception:  # a failing backend: no count, never a failed page
                count = None
            self._entries = (time.monotonic(), count)
        return count

    def _cache_or_503(self) -> Cache:
        if self.cache is None:
            raise ProxyError(503, "caching is not enabled: set litellm_settings.cache: true in the config", "service_unavailable")
        return self.cache

    async def ping(self, request: Request) -> Response:
        self.auth.require_master(request)
        cache = self._cache_or_503()
        probe = f"llmstash-ping-{os.getpid()}-{time.monotonic_ns()}"
        try:
            await cache.storage.aset(probe, b"ping", 10.0)
            ok = await cache.storage.aget(probe) == b"ping"
            await cache.storage.adelete(probe)
        except Exception as exc:
            return _json({"status": "unhealthy", "cache_type": cache.type, "error": type(exc).__name__}, 503)
        return _json({"status": "healthy" if ok else "unhealthy", "cache_type": cache.type}, 200 if ok else 503)

    async def delete(self, request: Request) -> Response:
        self.auth.require_master(request)
        cache = self._cache_or_503()
        keys = (await self._body(request)).get("keys")
        if not isinstance(keys, list) or not all(isinstance(key, str) and key for key in keys):
            raise ProxyError(400, 'keys must be a list of cache keys: {"keys": ["<key>", ...]}', param="keys")
        for key in keys:
            await cache.storage.adelete(key)
        return _json({"status": "success", "deleted": len(keys)})

    async def flushall(self, request: Request) -> Response:
        self.auth.require_master(request)
        cache = self._cache_or_503()
        await asyncio.to_thread(cache.flush_cache)
        self._entries = (0.0, None)
        return _json({"status": "success"})

    async def stats(self, request: Request) -> Response:
        self.auth.require_master(request)
        cache = self._cache_or_503()
        return _json(
            {
                "cache_type": cache.type,
                "namespace": cache.namespace,
                "cache_scope": self.config.cache_scope,
                "entries": await self.entries(),
                "cache": cache.stats(),
                "proxy": self.metrics.totals(),
            }
        )

    async def prometheus(self, request: Request) -> Response:
        if self.config.metrics_auth:
            self.auth.require_master(request)
        stats = self.cache.stats() if self.cache is not None else None
        text = self.metrics.prometheus(self.backend, stats, await self.entries() if self.cache is not None else None)
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def health(self, request: Request) -> Response:
        return _json({"status": "healthy", "cache": self.backend})

    # ----- the status page ---------------------------------------------------------------------------

    async def snapshot(self) -> dict[str, Any]:
        return {
            "generated_at": time.time(),
            "backend": self.backend,
            "namespace": self.cache.namespace if self.cache is not None else None,
            "cache_scope": self.config.cache_scope,
            "entries": await self.entries(),
            "totals": self.metrics.totals(),
            "cache": self.cache.stats() if self.cache is not None else None,
            "models": self.metrics.models(),
            "timeline": self.metrics.timeline_points(),
            "slowest": self.metrics.slowest_avoided(),
            "priced_models": sorted(self.config.prices),
        }

    def _ui_login(self, failed: bool) -> Response:
        return Response(ui.login_page(failed), 401 if failed else 200, media_type="text/html; charset=utf-8")

    def _ui_cookie(self, response: Response) -> Response:
        assert self.auth.ui_token is not None
        response.set_cookie(ADMIN_COOKIE, self.auth.ui_token, httponly=True, samesite="strict", path="/ui")
        return response

    async def ui_page(self, request: Request) -> Response:
        key = request.query_params.get("key")
        if key is not None:  # trade the key in the URL for a cookie, and take it out of the address bar
            if not self.auth.is_master_key(key):
                return self._ui_login(True)
            return self._ui_cookie(RedirectResponse("/ui", 303))
        if not self.auth.ui_allowed(request):
            if not self.auth.enabled:
                raise ProxyError(403, "the status page needs general_settings.master_key in the config", "permission_error")
            return self._ui_login(False)
        return Response(ui.page(await self.snapshot()), media_type="text/html; charset=utf-8")

    async def ui_login(self, request: Request) -> Response:
        async with request.form(max_files=0, max_fields=5) as form:
            key = form.get("key")
        if not isinstance(key, str) or not self.auth.is_master_key(key):
            return self._ui_login(True)
        return self._ui_cookie(RedirectResponse("/ui", 303))

    async def ui_data(self, request: Request) -> Response:
        if not self.auth.ui_allowed(request):
            raise ProxyError(401, "the status page's data needs the master key", "authentication_error")
        return _json(await self.snapshot())

    def close(self) -> None:
        """Flush pending writes (Redis ``redis_flush_size``) and release the backend."""
        if self.cache is not None:
            self.cache.close()


Handler = Callable[[Request], Awaitable[Response]]


def _log_unexpected(exc: Exception, where: str) -> None:
    # the type only: an exception's message or traceback could quote a request
    logger.error("llmstash proxy: unexpected %s while answering %s", type(exc).__name__, where)


def _guarded(handler: Handler) -> Handler:
    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:
            if not isinstance(exc, (ProxyError, LlmstashError)):
                _log_unexpected(exc, request.url.path)
            return error_response(exc)

    return guarded


def create_app(config: ProxyConfig) -> Starlette:
    """The proxy's ASGI app for a checked config (see :func:`llmstash.proxy.config.load_config`)."""
    proxy = Proxy(config)

    def api(route: str, payload_name: str) -> Handler:
        async def handler(request: Request) -> Response:
            return await proxy.call(request, route, payload_name)

        return _guarded(handler)

    routes = []
    for prefix in ("/v1", ""):
        routes += [
            Route(f"{prefix}/chat/completions", api("chat", "messages"), methods=["POST"]),
            Route(f"{prefix}/completions", api("text", "prompt"), methods=["POST"]),
            Route(f"{prefix}/embeddings", api("embedding", "input"), methods=["POST"]),
            Route(f"{prefix}/audio/transcriptions", _guarded(proxy.transcription), methods=["POST"]),
            Route(f"{prefix}/models", _guarded(proxy.models_list), methods=["GET"]),
        ]
    routes += [
        Route("/health", _guarded(proxy.health), methods=["GET"]),
        Route("/metrics", _guarded(proxy.prometheus), methods=["GET"]),
        Route("/cache/ping", _guarded(proxy.ping), methods=["GET"]),
        Route("/cache/delete", _guarded(proxy.delete), methods=["POST"]),
        Route("/cache/flushall", _guarded(proxy.flushall), methods=["POST"]),
        Route("/cache/stats", _guarded(proxy.stats), methods=["GET"]),
        Route("/ui", _guarded(proxy.ui_page), methods=["GET"]),
        Route("/ui/login", _guarded(proxy.ui_login), methods=["POST"]),
        Route("/ui/data", _guarded(proxy.ui_data), methods=["GET"]),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        proxy.close()  # graceful shutdown: buffered writes reach the backend before the worker exits

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        message = (
            f"no route {request.method} {request.url.path}"
            if status != 405
            else f"{request.method} is not allowed on {request.url.path}"
        )
        return Response(orjson.dumps(error_body(status, message)), status, media_type="application/json")

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: not_found})
    app.state.proxy = proxy
    return app


def app_from_environment() -> Starlette:
    """The app for the config file named by ``LLMSTASH_PROXY_CONFIG`` (a uvicorn factory)."""
    path = os.environ.get(CONFIG_ENV)
    if not path:
        raise RuntimeError(f"{CONFIG_ENV} must name the proxy's config file")
    return create_app(load_config(path))
