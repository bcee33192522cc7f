"""``Cache``: the configured cache, its LiteLLM-style methods, and the fail-open engine.

The completion functions ask the Cache three things: does this call use you (``plan``), what
do you hold for it (``read``/``aread``), keep this answer (``write``/``awrite``). Every storage
failure stops here: it is counted, logged once per kind (key hash only), and the call carries on
as a miss.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmstash._core.envelope import Entry, decode, encode
from llmstash._core.keys import digest, with_namespace
from llmstash._core.policy import (
    CacheMode,
    check_seconds,
    parse_call_types,
    parse_controls,
    parse_mode,
    uses_cache,
)
from llmstash._flight import TaskFlights, ThreadFlights
from llmstash._request import Request, build_request
from llmstash.backends import storage_class
from llmstash.backends.base import Storage
from llmstash.backends.tiered import TieredStorage
from llmstash.exceptions import CacheBackendError, ConfigurationError, CorruptEntryError
from llmstash.types import RESPONSE_KINDS, OpenAIObject, kind_of

logger = logging.getLogger("llmstash")

DEFAULT_MAX_ITEM_BYTES = 8 * 1024 * 1024

_OVERRIDABLE = ("get_cache_key", "get_cache", "add_cache", "async_get_cache", "async_add_cache")
_BACKEND_DEFAULT_TTL = {"local": "default_in_memory_ttl", "redis": "default_in_redis_ttl"}


@dataclass(slots=True)  # not frozen: frozen dataclasses are slow to build on the hit path
class Plan:
    """What one call does with the cache."""

    key: str
    read: bool
    write: bool
    ttl: float | None
    max_age: float | None
    probe: Any = None
    """The semantic tier's view of the request, made on a read and reused by the write."""


class _Counters:
    __slots__ = ("_lock", "values")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values = dict.fromkeys(
            ("hits", "misses", "writes", "errors", "corrupt", "oversized", "coalesced", "semantic_hits"), 0
        )

    def add(self, name: str, count: int = 1) -> None:
        with self._lock:
            self.values[name] += count

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.values)


def _call_user_function(fn: Callable[..., Any], owner: Cache, /, *args: Any, **kwargs: Any) -> Any:
    """Call an add/get/key override; functions written with a leading ``self`` get the cache."""
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        params = []
    if params and params[0] == "self" and not inspect.ismethod(fn):
        return fn(owner, *args, **kwargs)
    return fn(*args, **kwargs)


class Cache:
    """A response cache; assign it to ``llmstash.cache`` to cache every supported call.

    Args:
        type: the backend: ``"local"`` (in-process LRU, the default), ``"disk"``, ``"redis"``,
            ``"s3"``, ``"gcs"`` or ``"azure-blob"`` (object storage; see ``llmstash.backends``), or a
            semantic type: ``"semantic"``, ``"redis-semantic"``, ``"qdrant-semantic"``,
            ``"dual-semantic"`` (see ``llmstash.semantic.tier``; ``similarity_threshold`` and the
            type's parameters go in ``**kwargs``).
        mode: ``CacheMode.default_on`` (calls use the cache unless told not to) or
            ``CacheMode.default_off`` (only calls with ``caching=True`` or
            ``cache={"use-cache": True}`` use it).
        namespace: a prefix for every key, isolating this cache's entries.
        ttl: seconds an entry stays valid; ``None`` (the default) means no expiry.
        default_in_memory_ttl: the default TTL of a ``local`` cache when ``ttl`` is not given.
        supported_call_types: which calls are cached (default: all of them).
        max_item_bytes: an answer whose entry exceeds this many bytes is not stored (default 8 MiB).
        local_tier_ttl: for shared backends, keep entries read or written here in process memory
            for this many seconds too (faster hits; another process's change to an entry may be
            seen up to this many seconds late).
        clock: the time source for TTL and ``s-maxage`` (tests inject a fake one).
        **kwargs: backend parameters: ``max_size_in_memory`` (entries, default 100,000) and
            ``max_memory_bytes`` (default 256 MiB) for ``local``; ``disk_cache_dir``
            (default ``.llmstash_cache``), ``max_disk_bytes`` (default 1 GiB) and
            ``disk_timeout`` (SQLite lock wait, default 1 s) for ``disk``; ``host``, ``port``,
            ``password``, ``username``, ``db``, ``ssl``, ``url``, ``redis_flush_size``,
            ``redis_startup_nodes`` (Redis Cluster) and any ``redis.Redis()`` keyword for
            ``redis`` (see ``llmstash.backends.redis``); ``s3_*``, ``gcs_*`` and ``azure_*``
            parameters for the object stores (``llmstash.backends.s3``, ``.gcs``, ``.azure_blob``).
    """

    def __init__(
        self,
        type: str = "local",
        mode: CacheMode | str = CacheMode.default_on,
        host: str | None = None,
        port: int | str | None = None,
        password: str | None = None,
        namespace: str | None = None,
        ttl: float | None = None,
        default_in_memory_ttl: float | None = None,
        default_in_redis_ttl: float | None = None,
        supported_call_types: list[str] | None = None,
        max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES,
        local_tier_ttl: float | None = None,
        clock: Callable[[], float] = time.time,
        **kwargs: Any,
    ) -> None:
        storage_cls = storage_class(type)
        self.type = type
        self.mode = parse_mode(mode)
        if namespace is not None and (not isinstance(namespace, str) or not namespace):
            raise ConfigurationError(f"namespace must be a non-empty string or None, got {namespace!r}")
        self.namespace = namespace
        self.supported_call_types = parse_call_types(supported_call_types)
        if isinstance(max_item_bytes, bool) or not isinstance(max_item_bytes, int) or max_item_bytes <= 0:
            raise ConfigurationError(f"max_item_bytes must be a positive integer, got {max_item_bytes!r}")
        self.max_item_bytes = max_item_bytes
        if not callable(clock):
            raise ConfigurationError("clock must be a callable returning seconds, like time.time")
        self._clock = clock

        backend_ttls = {"default_in_memory_ttl": default_in_memory_ttl, "default_in_redis_ttl": default_in_redis_ttl}
        own_ttl_name = _BACKEND_DEFAULT_TTL.get(type)
        for name, value in backend_ttls.items():
            check_seconds(name, value)
            if value is not None and name != own_ttl_name:
                raise ConfigurationError(f"{name} applies to type={'redis' if 'redis' in name else 'local'!r}, not {type!r}")
        self.ttl = check_seconds("ttl", ttl)
        if self.ttl is None and own_ttl_name is not None:
            self.ttl = check_seconds(own_ttl_name, backend_ttls[own_ttl_name])

        options = {"host": host, "port": port, "password": password, **kwargs}
        options = {name: value for name, value in options.items() if value is not None}
        shared = storage_cls.from_options(options, clock)
        self.locks: Any = shared if getattr(shared, "supports_locks", False) else None
        """The backend that holds cross-process single-flight locks (None: this process only)."""
        self.storage: Storage = shared
        self.semantic: Any = getattr(shared, "semantic", None)
        """The semantic tier (types semantic, redis-semantic, qdrant-semantic, dual-semantic), or None."""
        if local_tier_ttl is not None:
            seconds = check_seconds("local_tier_ttl", local_tier_ttl)
            if type == "local" or not seconds:
                raise ConfigurationError(
                    "local_tier_ttl must be > 0 and applies to shared backends (disk, redis), not type='local'"
                )
            self.storage = TieredStorage(shared, seconds)
        self._counters = _Counters()
        self.thread_flights = ThreadFlights()
        self.task_flights = TaskFlights()
        self._reported: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        return f"Cache(type={self.type!r}, mode={self.mode.value!r}, namespace={self.namespace!r}, ttl={self.ttl!r})"

    # ----- keys -------------------------------------------------------------------------------

    def get_cache_key(self, *args: Any, **kwargs: Any) -> str:
        """The key a call with these keyword arguments uses, namespace included."""
        request = build_request(kwargs.pop("call_type", None), kwargs)
        return with_namespace(request.key(), self.namespace, request.controls.namespace)

    def _key(self, request: Request) -> str:
        custom = self.__dict__.get("get_cache_key")
        if custom is None:
            return with_namespace(request.key(), self.namespace, request.controls.namespace)
        return with_namespace(
            str(_call_user_function(custom, self, **request.kwargs)), self.namespace, request.controls.namespace
        )

    def plan(self, request: Request) -> Plan | None:
        """How a call uses this cache, or None when it does not use it at all."""
        if request.call_type not in self.supported_call_types:
            return None
        controls = request.controls
        if not uses_cache(self.mode, request.caching, controls):
            return None
        ttl = controls.ttl if controls.ttl is not None else self.ttl
        return Plan(self._key(request), not controls.no_cache, not controls.no_store, ttl, controls.max_age)

    # ----- the engine: reads and writes that never fail the call -------------------------------

    def _log_once(self, kind: tuple[str, str], message: str, *args: Any) -> None:
        """WARNING the first time this kind of trouble happens, DEBUG after that."""
        level = logging.DEBUG if kind in self._reported else logging.WARNING
        self._reported.add(kind)
        logger.log(level, message, *args)

    def _failed(self, operation: str, key: str, exc: BaseException) -> None:
        self._counters.add("errors")
        if operation == "read":
            self._counters.add("misses")  # the call goes upstream, as on any miss
        # our own backend errors carry a short, secret-free reason ("redis AuthenticationError")
        reason = f"{type(exc).__name__}: {exc}" if isinstance(exc, CacheBackendError) else type(exc).__name__
        self._log_once(
            (operation, type(exc).__name__),
            "llmstash: %s cache %s failed for key hash %s (%s); the call goes on without the cache",
            self.type,
            operation,
            digest(key),
            reason,
        )

    def _accept(self, key: str, raw: bytes | None, max_age: float | None) -> tuple[Entry | None, bool]:
        """(entry or None, whether the stored bytes are unusable and should be deleted)."""
        if raw is None:
            return None, False
        try:
            entry = decode(raw)
        except CorruptEntryError:
            self._counters.add("corrupt")
            self._log_once(
                ("decode", "CorruptEntryError"),
                "llmstash: dropped an undecodable %s cache entry, key hash %s",
                self.type,
                digest(key),
            )
            return None, True
        now = self._clock()
        if entry.expired(now):
            return None, True
        if max_age is not None and entry.age(now) > max_age:
            return None, False
        return entry, False

    def _entry_from_custom(self, value: Any, family: str | None) -> Entry | None:
        """An entry made from what a custom ``get_cache`` returned."""
        if value is None:
            return None
        if isinstance(value, OpenAIObject):
            return Entry(kind_of(value) or family or "value", self._clock(), None, value.model_dump())
        if isinstance(value, dict) and family is not None:
            return Entry(family, self._clock(), None, value)
        return Entry("value", self._clock(), None, value)

    def _count_read(self, entry: Entry | None, family: str, count: bool = True) -> Entry | None:
        if entry is not None and entry.kind != family:
            entry = None  # e.g. a custom key shared by a chat call and an embedding call
        if count:
            self._counters.add("hits" if entry is not None else "misses")
        return entry

    @staticmethod
    def _kind_and_data(result: Any) -> tuple[str, Any]:
        kind = kind_of(result)
        return (kind, result._data) if kind is not None else ("value", result)

    def _blob(self, key: str, kind: str, data: Any, ttl: float | None) -> bytes | None:
        """The envelope to store, or None when the result is not to be kept."""
        if ttl == 0:
            return None
        now = self._clock()
        blob = encode(kind, data, now, None if ttl is None else now + ttl)
        if len(blob) > self.max_item_bytes:
            self._counters.add("oversized")
            logger.debug("llmstash: not storing %d bytes under key hash %s (max_item_bytes)", len(blob), digest(key))
            return None
        return blob

    @property
    def customized(self) -> bool:
        """Whether keys or storage were overridden by assignment (``cache.get_cache = ...``)."""
        return any(name in self.__dict__ for name in _OVERRIDABLE)

    def read(self, plan: Plan, request: Request, count: bool = True) -> Entry | None:
        """The cached entry for a call, or None (a miss, or a backend failure).
        ``count=False`` re-checks quietly: no hit/miss counted, no failure reported."""
        custom = self.__dict__.get("get_cache")
        if custom is not None and not count:
            return None  # the user's get_cache is asked once per call
        try:
            if custom is not None:
                value = _call_user_function(custom, self, cache_key=plan.key, **request.kwargs)
                return self._count_read(self._entry_from_custom(value, request.family), request.family, count)
            entry, drop = self._accept(plan.key, self.storage.get(plan.key), plan.max_age)
            if drop:
                self.storage.delete(plan.key)
        except Exception as exc:
            if count:  # a quiet re-check does not report what the first read reported
                self._failed("read", plan.key, exc)
            return None
        if entry is None and count and self.semantic is not None:
            entry = self.semantic.lookup(self, plan, request)  # fails open by itself
            if entry is not None:
                self._counters.add("semantic_hits")
        return self._count_read(entry, request.family, count)

    async def aread(self, plan: Plan, request: Request, count: bool = True) -> Entry | None:
        custom = self.__dict__.get("async_get_cache") or self.__dict__.get("get_cache")
        if custom is not None and not count:
            return None
        try:
            if custom is not None:
                value = _call_user_function(custom, self, cache_key=plan.key, **request.kwargs)
                if inspect.isawaitable(value):
                    value = await value
                return self._count_read(self._entry_from_custom(value, request.family), request.family, count)
            entry, drop = self._accept(plan.key, await self.storage.aget(plan.key), plan.max_age)
            if drop:
                await self.storage.adelete(plan.key)
        except Exception as exc:
            if count:  # a quiet re-check does not report what the first read reported
                self._failed("read", plan.key, exc)
            return None
        if entry is None and count and self.semantic is not None:
            entry = await self.semantic.alookup(self, plan, request)
            if entry is not None:
                self._counters.add("semantic_hits")
        return self._count_read(entry, request.family, count)

    def write(self, plan: Plan, request: Request, response: OpenAIObject) -> None:
        """Store a fresh answer under the call's key (failures are counted, never raised)."""
        custom = self.__dict__.get("add_cache")
        try:
            if custom is not None:
                _call_user_function(custom, self, response, cache_key=plan.key, **request.kwargs)
                self._counters.add("writes")
                return
            blob = self._blob(plan.key, *self._kind_and_data(response), plan.ttl)
            if blob is not None:
                self.storage.set(plan.key, blob, plan.ttl)
                self._counters.add("writes")
        except Exception as exc:
            self._failed("write", plan.key, exc)
            return
        if blob is not None and self.semantic is not None:
            self.semantic.store(self, plan, request, blob)

    async def awrite(self, plan: Plan, request: Request, response: OpenAIObject) -> None:
        custom = self.__dict__.get("async_add_cache") or self.__dict__.get("add_cache")
        try:
            if custom is not None:
                outcome = _call_user_function(custom, self, response, cache_key=plan.key, **request.kwargs)
                if inspect.isawaitable(outcome):
                    await outcome
                self._counters.add("writes")
                return
            blob = self._blob(plan.key, *self._kind_and_data(response), plan.ttl)
            if blob is not None:
                await self.storage.aset(plan.key, blob, plan.ttl)
                self._counters.add("writes")
        except Exception as exc:
            self._failed("write", plan.key, exc)
            return
        if blob is not None and self.semantic is not None:
            await self.semantic.astore(self, plan, request, blob)

    def _accept_many(
        self, keys: list[str], raws: list[bytes | None], max_age: float | None
    ) -> tuple[list[Entry | None], list[str]]:
        entries: list[Entry | None] = []
        dropped = []
        for key, raw in zip(keys, raws, strict=True):
            entry, drop = self._accept(key, raw, max_age)
            if drop:
                dropped.append(key)
            entries.append(self._count_read(entry, "embedding-item", count=False))
        hits = sum(entry is not None for entry in entries)
        self._counters.add("hits", hits)
        self._counters.add("misses", len(entries) - hits)
        return entries, dropped

    def read_items(self, keys: list[str], max_age: float | None) -> list[Entry | None]:
        """Entries for the items of an embedding batch, in one backend round trip."""
        try:
            entries, dropped = self._accept_many(keys, self.storage.get_many(keys), max_age)
            for key in dropped:
                self.storage.delete(key)
        except Exception as exc:
            self._failed("read", keys[0] if keys else "", exc)
            return [None] * len(keys)
        return entries

    async def aread_items(self, keys: list[str], max_age: float | None) -> list[Entry | None]:
        try:
            entries, dropped = self._accept_many(keys, await self.storage.aget_many(keys), max_age)
            for key in dropped:
                await self.storage.adelete(key)
        except Exception as exc:
            self._failed("read", keys[0] if keys else "", exc)
            return [None] * len(keys)
        return entries

    def _item_blobs(self, items: list[tuple[str, Any]], ttl: float | None) -> list[tuple[str, bytes]]:
        blobs = [(key, self._blob(key, "embedding-item", data, ttl)) for key, data in items]
        return [(key, blob) for key, blob in blobs if blob is not None]

    def write_items(self, items: list[tuple[str, Any]], ttl: float | None) -> None:
        """Store the new items of an embedding batch (``(key, data)`` pairs) in one round trip."""
        try:
            blobs = self._item_blobs(items, ttl)
            if blobs:
                self.storage.set_many(blobs, ttl)
                self._counters.add("writes")
        except Exception as exc:
            self._failed("write", items[0][0] if items else "", exc)

    async def awrite_items(self, items: list[tuple[str, Any]], ttl: float | None) -> None:
        try:
            blobs = self._item_blobs(items, ttl)
            if blobs:
                await self.storage.aset_many(blobs, ttl)
                self._counters.add("writes")
        except Exception as exc:
            self._failed("write", items[0][0] if items else "", exc)

    # ----- the LiteLLM-style direct API --------------------------------------------------------

    def _direct(self, cache_key: str | None, kwargs: dict[str, Any]) -> tuple[str, float | None, float | None]:
        """Key, ttl and max-age for add_cache/get_cache, from ``cache_key`` or the call kwargs."""
        controls = parse_controls(kwargs.get("cache"))
        ttl = check_seconds("ttl", kwargs.get("ttl"))
        if ttl is None:
            ttl = controls.ttl if controls.ttl is not None else self.ttl
        if cache_key is None:  # the key a call with these arguments uses, custom key function included
            call_kwargs = {name: value for name, value in kwargs.items() if name != "ttl"}
            cache_key = self._key(build_request(call_kwargs.pop("call_type", None), call_kwargs))
        if not isinstance(cache_key, str):
            raise ConfigurationError(f"cache_key must be a string, got {type(cache_key).__name__}")
        return cache_key, ttl, controls.max_age

    def add_cache(self, result: Any, *args: Any, cache_key: str | None = None, **kwargs: Any) -> None:
        """Store ``result`` under ``cache_key`` (used exactly as given), or under the key of the
        call described by ``kwargs``. ``result`` is a response object or any JSON value;
        ``ttl=`` or ``cache={"ttl": ...}`` set its lifetime."""
        key, ttl, _ = self._direct(cache_key, kwargs)
        blob = self._blob(key, *self._kind_and_data(result), ttl)  # TypeError here: the value is not JSON
        if blob is None:
            return
        try:
            self.storage.set(key, blob, ttl)
            self._counters.add("writes")
        except Exception as exc:
            self._failed("write", key, exc)

    def get_cache(self, *args: Any, cache_key: str | None = None, **kwargs: Any) -> Any:
        """What ``add_cache`` (or a cached call) stored under the key, or None."""
        key, _, max_age = self._direct(cache_key, kwargs)
        try:
            entry, drop = self._accept(key, self.storage.get(key), max_age)
            if drop:
                self.storage.delete(key)
        except Exception as exc:
            self._failed("read", key, exc)
            return None
        self._counters.add("hits" if entry is not None else "misses")  # as a failed read counts a miss
        return _value_of(entry)

    async def async_add_cache(self, result: Any, *args: Any, cache_key: str | None = None, **kwargs: Any) -> None:
        key, ttl, _ = self._direct(cache_key, kwargs)
        blob = self._blob(key, *self._kind_and_data(result), ttl)
        if blob is None:
            return
        try:
            await self.storage.aset(key, blob, ttl)
            self._counters.add("writes")
        except Exception as exc:
            self._failed("write", key, exc)

    async def async_get_cache(self, *args: Any, cache_key: str | None = None, **kwargs: Any) -> Any:
        key, _, max_age = self._direct(cache_key, kwargs)
        try:
            entry, drop = self._accept(key, await self.storage.aget(key), max_age)
            if drop:
                await self.storage.adelete(key)
        except Exception as exc:
            self._failed("read", key, exc)
            return None
        self._counters.add("hits" if entry is not None else "misses")  # as a failed read counts a miss
        return _value_of(entry)

    def delete_cache(self, cache_key: str) -> None:
        """Remove one entry."""
        self.storage.delete(cache_key)

    def flush_cache(self) -> None:
        """Remove this cache's entries: those in its namespace, or all of the backend's entries
        when it has no namespace. Raises CacheBackendError when the backend cannot do it."""
        self.storage.clear(with_namespace("", self.namespace))

    def record(self, counter: str) -> None:
        """Add one to a counter of :meth:`stats` (the call layer records ``coalesced`` waits)."""
        self._counters.add(counter)

    def stats(self) -> dict[str, Any]:
        """Counters since this Cache was made: hits, misses, writes, errors, corrupt, oversized,
        coalesced (calls that missed but were answered by an identical call already in flight),
        semantic_hits (hits the semantic tier answered; counted in hits too), and ``hit_rate``: the share of reads answered without an upstream call of their own,
        (hits + coalesced) / (hits + misses)."""
        values: dict[str, Any] = self._counters.snapshot()
        reads = values["hits"] + values["misses"]
        # a coalesced call missed the storage but was answered without an upstream call of its own
        values["hit_rate"] = (values["hits"] + values["coalesced"]) / reads if reads else 0.0
        return values

    def close(self) -> None:
        """Flush pending writes and release the backend's connections and files."""
        self.storage.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _value_of(entry: Entry | None) -> Any:
    if entry is None:
        return None
    cls = RESPONSE_KINDS.get(entry.kind)
    return cls(entry.data) if cls is not None else entry.data
