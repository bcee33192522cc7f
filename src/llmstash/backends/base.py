"""The storage protocol every backend implements: bytes in, bytes out.

A backend stores opaque envelope bytes under string keys. It implements ``get``, ``set`` and
``delete`` (plus ``clear`` and ``close``); ``get_many``/``set_many`` and the async twins have
defaults a backend overrides when it can do better (one round trip, a native async client).
Backends raise on failure; the Cache above them fails open, logs and counts. Constructors do no
I/O: connections and files are opened on first use.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

from llmstash.exceptions import ConfigurationError

Clock = Callable[[], float]


class Storage:
    """Base class of the storage backends."""

    name: ClassVar[str] = "storage"
    options: ClassVar[frozenset[str]] = frozenset()
    """Cache(...) parameters this backend accepts, besides the common ones."""

    @classmethod
    def from_options(cls, options: dict[str, Any], clock: Clock) -> Storage:
        """Build the backend from ``Cache(...)`` parameters (validated against ``options``)."""
        unknown = sorted(set(options) - cls.options)
        if unknown:
            accepted = ", ".join(sorted(cls.options)) or "none"
            raise ConfigurationError(
                f"Cache(type={cls.name!r}) got unknown parameter {unknown[0]!r}; parameters for this type: {accepted}"
            )
        return cls(clock=clock, **options)

    def __init__(self, *, clock: Clock = time.time) -> None:
        self._clock = clock

    def get(self, key: str) -> bytes | None:
        raise NotImplementedError

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        """Store ``value``; ``ttl`` in seconds (None: no expiry)."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def clear(self, prefix: str = "") -> None:
        """Remove every entry whose key starts with ``prefix`` (all entries by default)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections and files; pending writes are flushed first."""

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self.get(key) for key in keys]

    def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        for key, value in items:
            self.set(key, value, ttl)

    # In-process backends answer in microseconds, so their async side calls the sync side
    # directly. Network backends override these with native async clients.
    async def aget(self, key: str) -> bytes | None:
        return self.get(key)

    async def aset(self, key: str, value: bytes, ttl: float | None) -> None:
        self.set(key, value, ttl)

    async def adelete(self, key: str) -> None:
        self.delete(key)

    async def aget_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return self.get_many(keys)

    async def aset_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        self.set_many(items, ttl)

    def keys(self, prefix: str = "") -> Iterable[str]:
        """The keys of the stored entries that start with ``prefix``, in no set order (for the
        CLI's export, inspect and purge). Optional: a backend that cannot list its keys raises
        NotImplementedError."""
        raise NotImplementedError(f"the {self.name} backend cannot list its keys")
