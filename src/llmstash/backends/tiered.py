"""An in-process tier in front of a shared backend: ``Cache(type="redis", local_tier_ttl=5)``.

Reads look in process memory first and fall back to the shared backend, keeping what they find
for ``local_tier_ttl`` seconds; writes and deletes go to both. The staleness bound is exactly
``local_tier_ttl``: an entry another process deletes or replaces in the shared backend may still
be served here for at most that many seconds. Entry expiry (TTL) is never extended: every
entry carries its own expiry time, checked on each read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from llmstash.backends.base import Storage
from llmstash.backends.memory import MemoryStorage


class TieredStorage(Storage):
    name = "tiered"

    def __init__(self, shared: Storage, local_ttl: float, max_entries: int = 10_000, max_bytes: int = 64 * 1024 * 1024) -> None:
        super().__init__(clock=shared._clock)
        self.shared = shared
        self.local_ttl = local_ttl
        self.local = MemoryStorage(max_size_in_memory=max_entries, max_memory_bytes=max_bytes, clock=shared._clock)

    def _local_ttl(self, ttl: float | None) -> float:
        return self.local_ttl if ttl is None else min(ttl, self.local_ttl)

    def get(self, key: str) -> bytes | None:
        value = self.local.get(key)
        if value is None:
            value = self.shared.get(key)
            if value is not None:
                self.local.set(key, value, self.local_ttl)
        return value

    async def aget(self, key: str) -> bytes | None:
        value = self.local.get(key)
        if value is None:
            value = await self.shared.aget(key)
            if value is not None:
                self.local.set(key, value, self.local_ttl)
        return value

    def _merge(self, keys: Sequence[str], local: list[bytes | None], shared: list[bytes | None]) -> list[bytes | None]:
        found = iter(shared)
        merged = []
        for key, value in zip(keys, local, strict=True):
            if value is None:
                value = next(found)
                if value is not None:
                    self.local.set(key, value, self.local_ttl)
            merged.append(value)
        return merged

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        local = self.local.get_many(keys)
        missing = [key for key, value in zip(keys, local, strict=True) if value is None]
        return self._merge(keys, local, self.shared.get_many(missing) if missing else [])

    async def aget_many(self, keys: Sequence[str]) -> list[bytes | None]:
        local = self.local.get_many(keys)
        missing = [key for key, value in zip(keys, local, strict=True) if value is None]
        return self._merge(keys, local, await self.shared.aget_many(missing) if missing else [])

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        self.shared.set(key, value, ttl)
        self.local.set(key, value, self._local_ttl(ttl))

    async def aset(self, key: str, value: bytes, ttl: float | None) -> None:
        await self.shared.aset(key, value, ttl)
        self.local.set(key, value, self._local_ttl(ttl))

    def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        self.shared.set_many(items, ttl)
        self.local.set_many(items, self._local_ttl(ttl))

    async def aset_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        await self.shared.aset_many(items, ttl)
        self.local.set_many(items, self._local_ttl(ttl))

    def delete(self, key: str) -> None:
        self.local.delete(key)
        self.shared.delete(key)

    async def adelete(self, key: str) -> None:
        self.local.delete(key)
        await self.shared.adelete(key)

    def clear(self, prefix: str = "") -> None:
        self.local.clear(prefix)
        self.shared.clear(prefix)

    def close(self) -> None:
        self.shared.close()

    def keys(self, prefix: str = "") -> Iterable[str]:
        """The shared backend's keys (the local tier holds a subset of them)."""
        return self.shared.keys(prefix)
