"""A vector index on RediSearch (Redis Stack, or Valkey with the search module loaded).

Each entry is a hash ``llmstash-vec:<index name>:<id>`` with the vector (FLOAT32 bytes), the scope
(a TAG field the KNN query filters on), the payload (JSON) and the expiry, which is also set on the
key (``PEXPIRE``), so Redis drops expired entries and RediSearch forgets them. The index
(``FT.CREATE ... ON HASH PREFIX 1 llmstash-vec:<index name>:``, HNSW by default or FLAT, cosine) is
created on the first write, once the vector size is known. It shares the exact storage's
connection settings and its short-outage breaker: when Redis was unreachable a moment ago the
index is skipped too.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from llmstash.backends.redis import RedisStorage, _glob_escape, _import_redis
from llmstash.exceptions import CacheBackendError, ConfigurationError
from llmstash.semantic.index import Match, Vector

KEY_PREFIX = "llmstash-vec:"
RETRY_AFTER = 0.5
"""Seconds the index skips Redis after a connection failure."""


class RedisIndex:
    def __init__(
        self, storage: Any, name: str = "llmstash-semantic", algorithm: str = "HNSW", clock: Callable[[], float] = time.time
    ) -> None:
        if not isinstance(storage, RedisStorage):
            raise ConfigurationError("RedisIndex needs the Redis storage of a redis-semantic Cache")
        if storage.startup_nodes is not None:
            raise ConfigurationError(
                "type='redis-semantic' needs a standalone Redis with the search module, not redis_startup_nodes"
            )
        if not isinstance(name, str) or not name or any(c in name for c in " :*?[]{}\\"):
            raise ConfigurationError(
                f"redis_semantic_cache_index_name must be a non-empty name without spaces or ':*?[]{{}}', got {name!r}"
            )
        algorithm = str(algorithm).upper()
        if algorithm not in ("HNSW", "FLAT"):
            raise ConfigurationError(f"redis_semantic_index_algorithm must be 'HNSW' or 'FLAT', got {algorithm!r}")
        self.storage = storage
        self.name = name
        self.algorithm = algorithm
        self.prefix = f"{KEY_PREFIX}{name}:"
        self.dimensions: int | None = None
        self._clock = clock
        self._client: Any = None
        self._lock = threading.Lock()
        self._created = False
        self._down_until = 0.0

    def _redis(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    redis = _import_redis()
                    settings = {**self.storage.settings, "protocol": 2}
                    if self.storage.url is not None:
                        for name in ("host", "port"):
                            settings.pop(name, None)
                        self._client = redis.Redis.from_url(self.storage.url, **settings)
                    else:
                        self._client = redis.Redis(**settings)
        return self._client

    def _check_up(self) -> None:
        if self._down_until and time.monotonic() < self._down_until:
            raise CacheBackendError("redis search was unreachable moments ago; skipping it briefly")

    def _guard(self, exc: Exception) -> CacheBackendError:
        """A connection failure makes the index skip Redis for a moment (as the exact storage does)."""
        errors = _import_redis().exceptions
        if isinstance(exc, (errors.ConnectionError, errors.TimeoutError, OSError)):
            self._down_until = time.monotonic() + RETRY_AFTER
        return CacheBackendError(f"redis search {type(exc).__name__}")

    def _run(self, *args: Any) -> Any:
        self._check_up()
        try:
            reply = self._redis().execute_command(*args)
        except Exception as exc:
            if "unknown index name" in str(exc).lower() or "no such index" in str(exc).lower():
                raise LookupError("index missing") from exc
            raise self._guard(exc) from exc
        self._down_until = 0.0
        return reply

    def _ensure_index(self, dimensions: int) -> None:
        if self._created and self.dimensions == dimensions:
            return
        if self.dimensions is not None and dimensions != self.dimensions:
            raise ValueError(f"vector has {dimensions} dimensions, the index holds {self.dimensions}")
        try:
            info = self._run("FT.INFO", self.name)
            found = _attribute_dimensions(info)
            if found is not None and found != dimensions:
                raise ValueError(f"RediSearch index {self.name!r} holds {found}-d vectors, the model makes {dimensions}-d")
        except LookupError:
            params = ["TYPE", "FLOAT32", "DIM", dimensions, "DISTANCE_METRIC", "COSINE"]
            if self.algorithm == "HNSW":
                params += ["M", 16, "EF_CONSTRUCTION", 200]
            schema = ["scope", "TAG", "vec", "VECTOR", self.algorithm, len(params), *params]
            try:
                self._run("FT.CREATE", self.name, "ON", "HASH", "PREFIX", 1, self.prefix, "SCHEMA", *schema)
            except Exception as exc:
                if "index already exists" not in str(exc.__cause__ or exc).lower():
                    raise
        self.dimensions = dimensions
        self._created = True

    def add(self, id: str, vector: Vector, scope: str, payload: dict[str, Any], expires_at: float | None) -> None:
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        self._ensure_index(len(vector))
        key = self.prefix + id
        fields = ["vec", vector.tobytes(), "scope", scope, "payload", json.dumps(payload), "exp", repr(expires_at or math.inf)]
        client = self._redis()
        self._check_up()
        try:
            pipe = client.pipeline(transaction=True)
            pipe.delete(key)
            pipe.hset(key, mapping=dict(zip(fields[::2], fields[1::2], strict=True)))
            if expires_at is not None:  # relative: the expiry is on the Cache's clock, not Redis's
                pipe.pexpire(key, max(1, min(2**62, int((expires_at - self._clock()) * 1000))))
            pipe.execute()
        except Exception as exc:
            raise self._guard(exc) from exc

    def search(self, vector: Vector, k: int, scope: str) -> list[Match]:
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if k <= 0:
            return []
        query = f"(@scope:{{{_tag(scope)}}})=>[KNN {int(k)} @vec $vec AS dist]"
        try:
            reply = self._run(
                "FT.SEARCH", self.name, query, "PARAMS", 2, "vec", vector.tobytes(),
                "SORTBY", "dist", "RETURN", 3, "dist", "payload", "exp", "LIMIT", 0, int(k), "DIALECT", 2,
            )  # fmt: skip
        except LookupError:
            return []  # nothing stored yet
        now = self._clock()
        found = []
        for position in range(1, len(reply), 2):
            key = _text(reply[position])
            fields = reply[position + 1]
            values = {_text(fields[i]): _text(fields[i + 1]) for i in range(0, len(fields), 2)}
            if float(values.get("exp", "inf")) <= now:
                continue
            found.append(Match(key[len(self.prefix) :], 1.0 - float(values["dist"]), json.loads(values.get("payload", "{}"))))
        found.sort(key=lambda match: -match.score)
        return found

    def delete(self, id: str) -> None:
        self._run("DEL", self.prefix + id)

    def clear(self, prefix: str = "") -> None:
        self._check_up()
        try:
            client = self._redis()
            batch: list[Any] = []
            for key in client.scan_iter(match=self.prefix + _glob_escape(prefix) + "*", count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    client.delete(*batch)
                    batch = []
            if batch:
                client.delete(*batch)
        except Exception as exc:
            raise self._guard(exc) from exc

    def drop(self) -> None:
        """Remove the index and its entries (tests and benchmarks)."""
        self.clear()
        with contextlib.suppress(LookupError):
            self._run("FT.DROPINDEX", self.name)
        self._created = False
        self.dimensions = None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __len__(self) -> int:
        count = 0
        for _ in self._redis().scan_iter(match=self.prefix + "*", count=1000):
            count += 1
        return count


def _tag(value: str) -> str:
    """A TAG value escaped for a query: every character but letters, digits and _ gets a backslash."""
    return "".join(c if c.isalnum() or c == "_" else "\\" + c for c in value)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _attribute_dimensions(info: Any) -> int | None:
    """The vector size an existing index was created with (None when it cannot be read)."""
    try:
        flat = [_text(item) if isinstance(item, (bytes, str)) else item for item in info]
        attributes = flat[flat.index("attributes") + 1]
        for attribute in attributes:
            parts = [_text(p) if isinstance(p, (bytes, str)) else p for p in attribute]
            lowered = [p.lower() if isinstance(p, str) else p for p in parts]
            if "dim" in lowered:
                return int(parts[lowered.index("dim") + 1])
    except (ValueError, TypeError, IndexError):
        return None
    return None
