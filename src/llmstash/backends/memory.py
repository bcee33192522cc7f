"""In-process LRU storage with an entry bound, a byte bound and per-entry TTL.

Every read moves the entry to the most-recently-used end; a write that takes the cache over
``max_size_in_memory`` entries or ``max_memory_bytes`` bytes evicts from the least-recently-used
end until both bounds hold. Expired entries are misses and are dropped when read. One lock
guards the structure, so threads may share it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence

from llmstash.backends.base import Clock, Storage
from llmstash.exceptions import ConfigurationError

DEFAULT_MAX_ENTRIES = 100_000
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
ENTRY_OVERHEAD = 200
"""Bytes charged per entry on top of key and value, so tiny entries cannot dodge the byte bound."""


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive integer, got {value!r}")
    return value


class MemoryStorage(Storage):
    name = "local"
    options = frozenset({"max_size_in_memory", "max_memory_bytes"})

    def __init__(
        self,
        *,
        max_size_in_memory: int = DEFAULT_MAX_ENTRIES,
        max_memory_bytes: int = DEFAULT_MAX_BYTES,
        clock: Clock = time.time,
    ) -> None:
        self.max_entries = _positive_int("max_size_in_memory", max_size_in_memory)
        self.max_bytes = _positive_int("max_memory_bytes", max_memory_bytes)
        super().__init__(clock=clock)
        self._entries: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def _cost(key: str, value: bytes) -> int:
        return len(key) + len(value) + ENTRY_OVERHEAD

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """Bytes currently charged against ``max_memory_bytes``."""
        return self._bytes

    def _lookup(self, key: str, now: float) -> bytes | None:
        """The live value under ``key`` (made most recently used), dropping it if expired; call
        with the lock held."""
        item = self._entries.get(key)
        if item is None:
            return None
        value, expires_at = item
        if expires_at is not None and now >= expires_at:
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return value

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._lookup(key, self._clock())

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        self.set_many(((key, value),), ttl)

    def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        expires_at = None if ttl is None else self._clock() + ttl
        with self._lock:  # one lock for the whole batch
            for key, value in items:
                if key in self._entries:
                    self._remove(key)  # the old value is replaced, even when the new one is not kept
                cost = self._cost(key, value)
                if cost > self.max_bytes:
                    continue  # larger than the whole cache: keeping it would evict everything else
                self._entries[key] = (value, expires_at)
                self._bytes += cost
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                self._remove(next(iter(self._entries)))

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = self._clock()
        with self._lock:  # one lock for the whole batch
            return [self._lookup(key, now) for key in keys]

    def _remove(self, key: str) -> None:
        value, _ = self._entries.pop(key)
        self._bytes -= self._cost(key, value)

    def delete(self, key: str) -> None:
        with self._lock:
            if key in self._entries:
                self._remove(key)

    def clear(self, prefix: str = "") -> None:
        with self._lock:
            if not prefix:
                self._entries.clear()
                self._bytes = 0
                return
            for key in [k for k in self._entries if k.startswith(prefix)]:
                self._remove(key)

    def keys(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix``, from least to most recently used (a snapshot)."""
        with self._lock:
            return [key for key in self._entries if key.startswith(prefix)]
