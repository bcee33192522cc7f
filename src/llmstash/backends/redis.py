"""Redis (and Valkey) storage, standalone or Redis Cluster, on redis-py — sync and asyncio.

Entries are the core's envelope bytes under ``llmstash:<key>`` (so ``clear`` removes only
llmstash's keys), with a per-entry TTL (``PX``) only when one is configured. Batch reads are one
round trip (``MGET``; on a cluster ``mget_nonatomic``, which groups keys by slot). With
``redis_flush_size=N`` writes are buffered and sent N at a time in one pipeline; the buffer is
flushed on ``close()`` and at interpreter exit, and reads in this process see buffered writes.

Bounded time when Redis is down or stalled: connect timeout 0.25 s, socket timeout 0.5 s, one
immediate retry on a dropped connection (a restarted server), and after a failure the backend
skips Redis for 0.5 s (each skipped operation fails at once, so calls go upstream without
waiting); then it tries again and resumes when Redis answers. An async operation is also cut
off after two socket timeouts plus the connect timeout: redis-py's async cluster client queues
concurrent operations behind one stalled node. Override the timeouts with ``socket_timeout=``
and ``socket_connect_timeout=``.

Cross-process single flight: ``try_lock``/``unlock`` take a short lock per key (``SET NX PX``
with a random token; released only by its owner, by a compare-and-delete script).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import inspect
import logging
import os
import secrets
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar
from urllib.parse import urlparse

from llmstash.backends._breaker import Breaker
from llmstash.backends.base import Clock, Storage
from llmstash.exceptions import CacheBackendError, ConfigurationError

logger = logging.getLogger("llmstash")

PREFIX = "llmstash:"
LOCK_PREFIX = "llmstash-lock:"
CONNECT_TIMEOUT = 0.25
SOCKET_TIMEOUT = 0.5
RETRY_AFTER = 0.5
"""Seconds Redis is skipped after a connection failure."""
MAX_PX = 2**62
"""Longest expiry (ms) given to Redis, which refuses one past LLONG_MAX ms from now."""

_UNLOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a SCAN pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _import_redis() -> Any:
    try:
        import redis
    except ImportError:
        raise ImportError('Cache(type="redis") needs redis-py: pip install "llmstash[redis]"') from None
    return redis


class _HideCommandArguments(logging.Filter):
    """redis-py's cluster client logs a failed command with its arguments (logger ``redis.cluster``,
    DEBUG): keys and values, which can hold prompts (custom keys) and answers. The record keeps the
    command's name; its arguments are hidden."""

    marker = " received for command "

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        start, end = message.find(self.marker), message.rfind(", on node ")
        if start >= 0 and end > start:
            head = message[: start + len(self.marker)]
            name = message[len(head) : end].split(" ", 1)[0]
            record.msg, record.args = f"{head}{name} <arguments hidden by llmstash>{message[end:]}", ()
        return True


_HIDE_COMMAND_ARGUMENTS = _HideCommandArguments()


def _client_parameters() -> frozenset[str]:
    redis = _import_redis()
    return frozenset(inspect.signature(redis.Redis.__init__).parameters) - {"self"}


class RedisStorage(Storage):
    name = "redis"
    own_options: ClassVar[frozenset[str]] = frozenset(
        {"host", "port", "password", "username", "db", "ssl", "url", "redis_flush_size", "redis_startup_nodes"}
    )

    @classmethod
    def from_options(cls, options: dict[str, Any], clock: Clock) -> Storage:
        """Our parameters, plus any keyword redis-py's client accepts (checked by name now)."""
        own = {k: v for k, v in options.items() if k in cls.own_options}
        client_kwargs = {k: v for k, v in options.items() if k not in cls.own_options}
        unknown = sorted(set(client_kwargs) - _client_parameters())
        if unknown:
            raise ConfigurationError(
                f"Cache(type='redis') got unknown parameter {unknown[0]!r}: not an llmstash Redis parameter "
                f"({', '.join(sorted(cls.own_options))}) nor a redis.Redis() keyword"
            )
        return cls(clock=clock, client_kwargs=client_kwargs, **own)

    def __init__(
        self,
        *,
        host: str | None = None,
        port: int | str | None = None,
        password: str | None = None,
        username: str | None = None,
        db: int | None = None,
        ssl: bool | None = None,
        url: str | None = None,
        redis_flush_size: int | None = None,
        redis_startup_nodes: list[dict[str, Any]] | None = None,
        client_kwargs: dict[str, Any] | None = None,
        clock: Clock = time.time,
    ) -> None:
        super().__init__(clock=clock)
        url = url or (os.environ.get("REDIS_URL") if host is None and redis_startup_nodes is None else None)
        if url is not None and urlparse(url).scheme not in ("redis", "rediss", "unix"):
            raise ConfigurationError(f"url must start with redis://, rediss:// or unix://, got {url.split('://')[0]!r}")
        if redis_flush_size is not None and (
            isinstance(redis_flush_size, bool) or not isinstance(redis_flush_size, int) or redis_flush_size < 1
        ):
            raise ConfigurationError(f"redis_flush_size must be a positive integer or None, got {redis_flush_size!r}")
        self.url = url
        self.startup_nodes = self._check_nodes(redis_startup_nodes)
        settings: dict[str, Any] = {
            "host": host or os.environ.get("REDIS_HOST", "127.0.0.1"),
            "port": int(port or os.environ.get("REDIS_PORT") or 6379),
            "password": password if password is not None else os.environ.get("REDIS_PASSWORD") or None,
            "username": username,
            "db": db,
            "ssl": ssl,
            "socket_timeout": SOCKET_TIMEOUT,
            "socket_connect_timeout": CONNECT_TIMEOUT,
            **(client_kwargs or {}),
        }
        self.settings = {k: v for k, v in settings.items() if v is not None}
        socket_timeout, connect_timeout = self.settings.get("socket_timeout"), self.settings.get("socket_connect_timeout", 0)
        self._async_limit = None if socket_timeout is None else 2 * socket_timeout + connect_timeout
        self.flush_size = redis_flush_size
        self._pending: dict[str, tuple[bytes, float | None]] = {}
        self._pending_lock = threading.Lock()
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._breaker = Breaker("redis", RETRY_AFTER)
        self._unreleased: dict[str, str] = {}
        """Single-flight locks (key: token) whose release failed; released before the next lock."""
        self._unreleased_lock = threading.Lock()
        if redis_flush_size is not None:
            _flush_at_exit.add(self)

    @staticmethod
    def _check_nodes(nodes: Any) -> list[tuple[str, int]] | None:
        if nodes is None:
            return None
        try:
            checked = [(str(node["host"]), int(node["port"])) for node in nodes]
        except (TypeError, KeyError, ValueError):
            raise ConfigurationError(
                'redis_startup_nodes must be a list like [{"host": "10.0.0.1", "port": 6379}, ...]'
            ) from None
        if not checked:
            raise ConfigurationError("redis_startup_nodes must name at least one node")
        return checked

    def __repr__(self) -> str:
        if self.startup_nodes:
            where = f"cluster {self.startup_nodes}"
        elif self.url is not None:  # the URL without its credentials (user:password@) and query (?password=)
            parts = urlparse(self.url)
            where = parts._replace(netloc=parts.netloc.rpartition("@")[2], query="").geturl()
        else:
            where = f"{self.settings['host']}:{self.settings['port']}"
        return f"RedisStorage({where})"  # never the password

    # ----- clients ---------------------------------------------------------------------------------

    def _retry(self, asynchronous: bool) -> Any:
        redis = _import_redis()
        module = "redis.asyncio.retry" if asynchronous else "redis.retry"
        retry_class = __import__(module, fromlist=["Retry"]).Retry
        from redis.backoff import NoBackoff

        return retry_class(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,))

    def _make_client(self, asynchronous: bool) -> Any:
        redis = _import_redis()
        package = __import__("redis.asyncio", fromlist=["Redis"]) if asynchronous else redis
        settings = {**self.settings, "retry": self._retry(asynchronous)}
        if self.startup_nodes is not None:
            cluster = __import__(f"{package.__name__}.cluster", fromlist=["RedisCluster", "ClusterNode"])
            for name in ("db", "host", "port"):
                settings.pop(name, None)
            nodes = [cluster.ClusterNode(host, port) for host, port in self.startup_nodes]
            cluster_logger = logging.getLogger("redis.cluster")
            if _HIDE_COMMAND_ARGUMENTS not in cluster_logger.filters:
                cluster_logger.addFilter(_HIDE_COMMAND_ARGUMENTS)
            return cluster.RedisCluster(startup_nodes=nodes, **settings)
        if self.url is not None:
            for name in ("host", "port"):
                settings.pop(name, None)
            return package.Redis.from_url(self.url, **settings)
        return package.Redis(**settings)

    def client(self) -> Any:
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._make_client(asynchronous=False)
        return self._client

    def async_client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            client = self._async_clients[loop] = self._make_client(asynchronous=True)
        return client

    # ----- failure handling ------------------------------------------------------------------------

    def _guard(self, exc: Exception) -> CacheBackendError:
        """Note a failure; connection trouble (or a cluster that is down: redis-py sleeps and retries
        then) makes the backend skip Redis for a moment."""
        redis = _import_redis()
        errors = redis.exceptions
        down = (errors.ConnectionError, errors.TimeoutError, OSError, errors.ClusterDownError, errors.RedisClusterException)
        if isinstance(exc, down):
            self._breaker.trip()
        return CacheBackendError(f"redis {type(exc).__name__}")

    def _call(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        self._breaker.check()
        try:
            result = getattr(self.client(), operation)(*args, **kwargs)
        except Exception as exc:
            raise self._guard(exc) from exc
        self._breaker.reset()
        return result

    async def _acall(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        self._breaker.check()
        try:
            async with asyncio.timeout(self._async_limit):
                result = await getattr(self.async_client(), operation)(*args, **kwargs)
        except Exception as exc:
            raise self._guard(exc) from exc
        self._breaker.reset()
        return result

    # ----- the storage protocol --------------------------------------------------------------------

    @staticmethod
    def _px(ttl: float | None) -> int | None:
        if ttl is None or not ttl * 1000 < MAX_PX:  # too long for Redis (or inf): the envelope's expiry governs
            return None
        return max(1, int(ttl * 1000))

    def _buffered(self, key: str) -> bytes | None:
        if not self._pending:
            return None
        with self._pending_lock:
            item = self._pending.get(key)
        return item[0] if item is not None else None

    def _buffer(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> list[tuple[str, bytes, float | None]] | None:
        """Add writes to the buffer; return what is to be flushed now (None: nothing yet)."""
        with self._pending_lock:
            for key, value in items:
                self._pending[key] = (value, ttl)
            if len(self._pending) < (self.flush_size or 0):
                return None
            batch = [(key, value, item_ttl) for key, (value, item_ttl) in self._pending.items()]
            self._pending.clear()
            return batch

    def _pipeline_writes(self, pipe: Any, items: Sequence[tuple[str, bytes, float | None]]) -> None:
        for key, value, ttl in items:
            pipe.set(PREFIX + key, value, px=self._px(ttl))

    def _write(self, items: Sequence[tuple[str, bytes, float | None]]) -> None:
        self._breaker.check()
        try:
            pipe = self.client().pipeline(transaction=False)
            self._pipeline_writes(pipe, items)
            pipe.execute()
        except Exception as exc:
            raise self._guard(exc) from exc

    async def _awrite(self, items: Sequence[tuple[str, bytes, float | None]]) -> None:
        self._breaker.check()
        try:
            pipe = self.async_client().pipeline(transaction=False)
            self._pipeline_writes(pipe, items)
            async with asyncio.timeout(self._async_limit):
                await pipe.execute()
        except Exception as exc:
            raise self._guard(exc) from exc

    def get(self, key: str) -> bytes | None:
        value = self._buffered(key)
        return value if value is not None else self._call("get", PREFIX + key)

    async def aget(self, key: str) -> bytes | None:
        value = self._buffered(key)
        return value if value is not None else await self._acall("get", PREFIX + key)

    def _mget(self) -> str:
        return "mget_nonatomic" if self.startup_nodes is not None else "mget"

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        values: list[bytes | None] = self._call(self._mget(), [PREFIX + key for key in keys])
        return [self._buffered(key) or value for key, value in zip(keys, values, strict=True)]

    async def aget_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        values: list[bytes | None] = await self._acall(self._mget(), [PREFIX + key for key in keys])
        return [self._buffered(key) or value for key, value in zip(keys, values, strict=True)]

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        self.set_many([(key, value)], ttl)

    async def aset(self, key: str, value: bytes, ttl: float | None) -> None:
        await self.aset_many([(key, value)], ttl)

    def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        if self.flush_size is None:
            if len(items) == 1:
                key, value = items[0]
                self._call("set", PREFIX + key, value, px=self._px(ttl))
            elif items:
                self._write([(key, value, ttl) for key, value in items])
            return
        batch = self._buffer(items, ttl)
        if batch:
            self._write(batch)

    async def aset_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        if self.flush_size is None:
            if len(items) == 1:
                key, value = items[0]
                await self._acall("set", PREFIX + key, value, px=self._px(ttl))
            elif items:
                await self._awrite([(key, value, ttl) for key, value in items])
            return
        batch = self._buffer(items, ttl)
        if batch:
            await self._awrite(batch)

    def delete(self, key: str) -> None:
        with self._pending_lock:
            self._pending.pop(key, None)
        self._call("delete", PREFIX + key)

    async def adelete(self, key: str) -> None:
        with self._pending_lock:
            self._pending.pop(key, None)
        await self._acall("delete", PREFIX + key)

    def clear(self, prefix: str = "") -> None:
        """Delete llmstash's entries whose key starts with ``prefix`` (all of them by default);
        keys that are not llmstash's are left alone."""
        with self._pending_lock:
            for key in [k for k in self._pending if k.startswith(prefix)]:
                del self._pending[key]
        self._breaker.check()
        try:
            client = self.client()
            batch: list[Any] = []
            for key in client.scan_iter(match=PREFIX + _glob_escape(prefix) + "*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    self._delete_keys(client, batch)
                    batch = []
            if batch:
                self._delete_keys(client, batch)
        except Exception as exc:
            raise self._guard(exc) from exc

    def keys(self, prefix: str = "") -> Iterator[str]:
        """llmstash's keys starting with ``prefix`` (``SCAN``, every node of a cluster), buffered
        writes included; a key may be listed twice if it is written while the scan runs."""
        with self._pending_lock:
            pending = {key for key in self._pending if key.startswith(prefix)}
        yield from pending
        self._breaker.check()
        try:
            for raw in self.client().scan_iter(match=PREFIX + _glob_escape(prefix) + "*", count=1000):
                key = raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else str(raw)
                if key[len(PREFIX) :] not in pending:
                    yield key[len(PREFIX) :]
        except Exception as exc:
            raise self._guard(exc) from exc

    @staticmethod
    def _delete_keys(client: Any, keys: list[Any]) -> None:
        client.delete(*keys)  # redis-py splits a multi-key DEL by slot on a cluster

    def _take_pending(self) -> list[tuple[str, bytes, float | None]]:
        with self._pending_lock:
            batch = [(key, value, ttl) for key, (value, ttl) in self._pending.items()]
            self._pending.clear()
        return batch

    def flush(self) -> None:
        """Send buffered writes now."""
        batch = self._take_pending()
        if batch:
            self._write(batch)

    async def aflush(self) -> None:
        batch = self._take_pending()
        if batch:
            await self._awrite(batch)

    def close(self) -> None:
        try:
            self.flush()
        except CacheBackendError:
            logger.warning("llmstash: redis unreachable at close; buffered writes were not stored")
        finally:
            _flush_at_exit.discard(self)
            if self._client is not None:
                self._client.close()
                self._client = None

    # ----- cross-process single flight -------------------------------------------------------------

    @property
    def supports_locks(self) -> bool:
        """Cross-process single flight needs writes other processes see at once: it is off when
        writes are buffered (``redis_flush_size``); single flight within the process still works."""
        return self.flush_size is None

    def _failed_release(self, key: str, token: str) -> None:
        # left alone, the lock would hold every process's identical calls until it expires
        with self._unreleased_lock:
            self._unreleased[key] = token

    def _released(self, key: str, token: str) -> None:
        with self._unreleased_lock:
            if self._unreleased.get(key) == token:
                del self._unreleased[key]

    def _release_unreleased(self) -> None:
        for key, token in list(self._unreleased.items()):
            self._call("eval", _UNLOCK, 1, LOCK_PREFIX + key, token)
            self._released(key, token)

    async def _arelease_unreleased(self) -> None:
        for key, token in list(self._unreleased.items()):
            await self._acall("eval", _UNLOCK, 1, LOCK_PREFIX + key, token)
            self._released(key, token)

    def try_lock(self, key: str, seconds: float) -> str | None:
        """A token if this process now holds the lock on ``key`` for ``seconds``, else None."""
        self._release_unreleased()
        token = secrets.token_hex(8)
        acquired = self._call("set", LOCK_PREFIX + key, token, nx=True, px=max(1, int(seconds * 1000)))
        return token if acquired else None

    def locked(self, key: str) -> bool:
        return bool(self._call("exists", LOCK_PREFIX + key))

    def unlock(self, key: str, token: str) -> None:
        try:
            self._call("eval", _UNLOCK, 1, LOCK_PREFIX + key, token)
        except CacheBackendError:
            self._failed_release(key, token)
            raise

    async def atry_lock(self, key: str, seconds: float) -> str | None:
        await self._arelease_unreleased()
        token = secrets.token_hex(8)
        acquired = await self._acall("set", LOCK_PREFIX + key, token, nx=True, px=max(1, int(seconds * 1000)))
        return token if acquired else None

    async def alocked(self, key: str) -> bool:
        return bool(await self._acall("exists", LOCK_PREFIX + key))

    async def aunlock(self, key: str, token: str) -> None:
        try:
            await self._acall("eval", _UNLOCK, 1, LOCK_PREFIX + key, token)
        except CacheBackendError:
            self._failed_release(key, token)
            raise


_flush_at_exit: set[RedisStorage] = set()
"""Buffering backends not closed yet: held until close() or exit, so no buffered write is lost."""


@atexit.register
def _flush_all() -> None:
    """Send every buffered write before the interpreter exits (a short script loses nothing)."""
    for storage in list(_flush_at_exit):
        with contextlib.suppress(Exception):  # at exit there is no caller left to tell
            storage.flush()
