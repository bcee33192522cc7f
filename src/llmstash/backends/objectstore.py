"""What the object-storage backends (S3, GCS, Azure Blob) share: names, expiry, threads, failures.

Layout: entry ``key`` is the object ``<path>llmstash/<escaped key>``, where ``path`` is the
user's ``s3_path``/``gcs_path`` (``"cache/"``) and the ``llmstash/`` segment keeps ``clear`` away
from anything else in the bucket. Keys are percent-escaped (``/``, ``.``, spaces, control and
non-ASCII characters), so any key is a valid object name and two keys never share one; an escaped
key longer than 900 characters is cut and suffixed with its SHA-256.

The body is the core's envelope (the same bytes every backend stores). An entry with a TTL also
carries its expiry as object metadata ``llmstash_expires_at`` (Unix seconds) for lifecycle rules
and people looking at the bucket; the envelope's own expiry is what is enforced: the cache treats
an expired entry as a miss and deletes it.

Concurrency: the cloud SDKs used here (boto3, google-cloud-storage, azure-storage-blob) are
synchronous, so the async side and batch reads run on a bounded pool of threads
(``object_store_threads``, default 16) owned by the backend. One design for all three stores, no
second SDK (aiobotocore, aiohttp) to install, and the pool bounds how many requests a burst can
open at once.

Bounded time: connect timeout 1 s, read timeout 2 s, no SDK retries (a miss is cheaper than a
retry on the hot path); after a connection failure, a 5xx, a timeout or a missing bucket the
store is skipped for 0.5 s (calls go upstream at once) and then tried again.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote, unquote

from llmstash.backends._breaker import Breaker
from llmstash.backends.base import Clock, Storage
from llmstash.exceptions import CacheBackendError, ConfigurationError

T = TypeVar("T")

SEGMENT = "llmstash/"
CONNECT_TIMEOUT = 1.0
READ_TIMEOUT = 2.0
RETRY_AFTER = 0.5
"""Seconds the store is skipped after a failure."""
DEFAULT_THREADS = 16
MAX_ESCAPED_KEY = 900
EXPIRES_METADATA = "llmstash_expires_at"


def escape_key(key: str) -> str:
    """``key`` as an object-name segment: prefix-preserving, distinct for distinct keys."""
    escaped = quote(key, safe=":").replace(".", "%2E")  # no '.'/'..' names, no trailing dot
    if len(escaped) > MAX_ESCAPED_KEY:
        return escaped[:MAX_ESCAPED_KEY] + "~" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return escaped


def check_path(option: str, path: object) -> str:
    """A user's path prefix (``"cache/"``) normalized to ``"cache/"``; ``""`` for none."""
    if path is None or path == "":
        return ""
    if not isinstance(path, str) or "\n" in path or "\r" in path or len(path) > 100:
        raise ConfigurationError(f"{option} must be a folder-like string such as 'cache/' (at most 100 characters), got {path!r}")
    path = path.strip("/")
    return path + "/" if path else ""


def check_name(option: str, value: object, pattern: str, rule: str) -> str:
    """A bucket or container name, checked against the store's naming rule."""
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise ConfigurationError(f"{option} {value!r} is not a valid name: {rule}")
    return value


def check_threads(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 256:
        raise ConfigurationError(f"object_store_threads must be an integer from 1 to 256, got {value!r}")
    return value


class ObjectStorage(Storage):
    """Base of the S3, GCS and Azure Blob backends.

    A subclass talks to its SDK in five small methods — ``_read``, ``_write``, ``_remove``,
    ``_names`` and ``_make_client`` — and may override ``_reason`` (a short, secret-free failure
    description for logs). Everything else lives here.
    """

    sdk: ClassVar[tuple[str, str, str]] = ("", "", "")
    """(module, PyPI package, llmstash extra) of the store's SDK, checked when the backend is made."""

    def __init__(self, *, path: str, threads: int = DEFAULT_THREADS, clock: Clock = time.time) -> None:
        module, package, extra = self.sdk
        if module:  # a missing SDK is reported now, not as a failed first call
            try:
                missing = importlib.util.find_spec(module) is None
            except (ImportError, ValueError):
                missing = True
            if missing:
                raise ImportError(f'Cache(type="{self.name}") needs {package}: pip install "llmstash[{extra}]"')
        super().__init__(clock=clock)
        self.prefix = path + SEGMENT
        self.threads = threads
        self._breaker = Breaker(self.name, RETRY_AFTER)
        self._client: Any = None
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._async_limit = 2 * (CONNECT_TIMEOUT + READ_TIMEOUT)
        """Longest an async operation waits for its thread (the SDK's own timeouts come first)."""

    # ----- what a subclass provides ----------------------------------------------------------------

    def _make_client(self) -> Any:
        raise NotImplementedError

    def _read(self, client: Any, name: str) -> bytes | None:
        raise NotImplementedError

    def _write(self, client: Any, name: str, value: bytes, metadata: dict[str, str]) -> None:
        raise NotImplementedError

    def _remove(self, client: Any, name: str) -> None:
        """Delete one object; a missing object is not an error."""
        raise NotImplementedError

    def _names(self, client: Any, prefix: str) -> Iterable[str]:
        """Names of the objects that start with ``prefix``."""
        raise NotImplementedError

    def _reason(self, exc: Exception) -> str:
        return type(exc).__name__

    # ----- plumbing ----------------------------------------------------------------------------------

    def object_name(self, key: str) -> str:
        return self.prefix + escape_key(key)

    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix=f"llmstash-{self.name}")
        return self._pool

    def _run(self, operation: Callable[..., T], *args: Any) -> T:
        """One SDK operation; any failure becomes a CacheBackendError and pauses the store."""
        self._breaker.check()
        try:
            result = operation(self.client(), *args)
        except Exception as exc:
            self._breaker.trip()
            raise CacheBackendError(f"{self.name} {self._reason(exc)}") from exc
        self._breaker.reset()
        return result

    def _each(self, operation: Callable[..., T], args: Sequence[Any]) -> list[T]:
        """``operation`` for every argument, concurrently on the pool; the first failure is raised."""
        if len(args) <= 1:
            return [self._run(operation, arg) for arg in args]
        return list(self._executor().map(lambda arg: self._run(operation, arg), args))

    async def _in_thread(self, function: Callable[..., T], *args: Any) -> T:
        self._breaker.check()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._async_limit):
                return await loop.run_in_executor(self._executor(), function, *args)
        except TimeoutError:
            self._breaker.trip()
            raise CacheBackendError(f"{self.name} operation took longer than {self._async_limit:g} s") from None

    def _metadata(self, ttl: float | None) -> dict[str, str]:
        return {} if ttl is None else {EXPIRES_METADATA: f"{self._clock() + ttl:.3f}"}

    # ----- the storage protocol ------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        return self._run(self._read, self.object_name(key))

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        names = [self.object_name(key) for key in keys]
        unique = list(dict.fromkeys(names))
        found = dict(zip(unique, self._each(self._read, unique), strict=True))
        return [found[name] for name in names]

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        self._run(self._write, self.object_name(key), value, self._metadata(ttl))

    def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        latest = {self.object_name(key): value for key, value in items}  # a later item wins
        metadata = self._metadata(ttl)
        self._each(lambda client, item: self._write(client, item[0], item[1], metadata), list(latest.items()))

    def delete(self, key: str) -> None:
        self._run(self._remove, self.object_name(key))

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Keys of the stored entries that start with ``prefix``. A key whose escaped form was too
        long for an object name (cut and hashed; over ~300 characters) cannot be recovered from
        its name and is not listed."""
        start = self.prefix + escape_key(prefix)[:MAX_ESCAPED_KEY]
        for name in self._run(lambda client: list(self._names(client, start))):
            escaped = name[len(self.prefix) :]
            if len(escaped) <= MAX_ESCAPED_KEY:  # longer: cut and hashed
                yield unquote(escaped)

    def clear(self, prefix: str = "") -> None:
        """Delete llmstash's objects whose key starts with ``prefix`` (all of them by default)."""
        start = self.prefix + escape_key(prefix)[:MAX_ESCAPED_KEY]
        names = self._run(lambda client: list(self._names(client, start)))
        self._each(self._remove, names)

    # Async: each object is its own pool task (never a task that waits for other pool tasks, which
    # could deadlock a busy pool).

    async def aget(self, key: str) -> bytes | None:
        return await self._in_thread(self._run, self._read, self.object_name(key))

    async def aget_many(self, keys: Sequence[str]) -> list[bytes | None]:
        names = [self.object_name(key) for key in keys]
        unique = list(dict.fromkeys(names))
        values = await asyncio.gather(*(self._in_thread(self._run, self._read, name) for name in unique))
        found = dict(zip(unique, values, strict=True))
        return [found[name] for name in names]

    async def aset(self, key: str, value: bytes, ttl: float | None) -> None:
        await self._in_thread(self._run, self._write, self.object_name(key), value, self._metadata(ttl))

    async def aset_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        latest = {self.object_name(key): value for key, value in items}
        metadata = self._metadata(ttl)
        await asyncio.gather(*(self._in_thread(self._run, self._write, name, value, metadata) for name, value in latest.items()))

    async def adelete(self, key: str) -> None:
        await self._in_thread(self._run, self._remove, self.object_name(key))

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            client, self._client = self._client, None
        if pool is not None:
            pool.shutdown(wait=True)
        closer = getattr(client, "close", None)
        if callable(closer):
            closer()
