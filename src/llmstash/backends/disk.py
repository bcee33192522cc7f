"""Disk storage on diskcache (SQLite plus files), shared by every process that opens the directory.

Entries survive restarts; several processes may read and write one directory at once (SQLite
locking). Values are stored as raw bytes; reading never unpickles, so a tampered entry is inert.
The directory and database are opened on first use.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from llmstash.backends.base import Clock, Storage
from llmstash.exceptions import CacheBackendError, ConfigurationError

DEFAULT_DIRECTORY = ".llmstash_cache"
DEFAULT_MAX_BYTES = 1024**3
DEFAULT_TIMEOUT = 1.0


def _import_diskcache() -> Any:
    try:
        import diskcache
    except ImportError:  # pragma: no cover - diskcache is a core dependency
        raise ImportError('Cache(type="disk") needs diskcache: pip install "llmstash[disk]"') from None
    return diskcache


class DiskStorage(Storage):
    name = "disk"
    options = frozenset({"disk_cache_dir", "max_disk_bytes", "disk_timeout"})

    def __init__(
        self,
        *,
        disk_cache_dir: str | os.PathLike[str] | None = None,
        max_disk_bytes: int = DEFAULT_MAX_BYTES,
        disk_timeout: float = DEFAULT_TIMEOUT,
        clock: Clock = time.time,
    ) -> None:
        if isinstance(max_disk_bytes, bool) or not isinstance(max_disk_bytes, int) or max_disk_bytes <= 0:
            raise ConfigurationError(f"max_disk_bytes must be a positive integer, got {max_disk_bytes!r}")
        if isinstance(disk_timeout, bool) or not isinstance(disk_timeout, (int, float)) or not 0 < disk_timeout * 1000 < 2**31:
            raise ConfigurationError(f"disk_timeout must be a positive number of seconds, got {disk_timeout!r}")
        self.directory = os.fspath(disk_cache_dir) if disk_cache_dir is not None else DEFAULT_DIRECTORY
        self.max_bytes = max_disk_bytes
        self.timeout = float(disk_timeout)
        super().__init__(clock=clock)
        self._db: Any = None
        self._open_lock = threading.Lock()

    def _cache(self) -> Any:
        db = self._db
        if db is None:
            with self._open_lock:
                if self._db is None:
                    diskcache = _import_diskcache()
                    self._db = diskcache.Cache(
                        self.directory,
                        size_limit=self.max_bytes,
                        timeout=self.timeout,
                        disk=_bytes_only_disk(diskcache),
                        eviction_policy="least-recently-stored",
                    )
                db = self._db
        return db

    def get(self, key: str) -> bytes | None:
        value = self._cache().get(key, default=None, retry=True)
        if value is not None and not isinstance(value, bytes):
            raise CacheBackendError("disk entry is not bytes")
        return value

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        # diskcache expires on the wall clock; the envelope's expires_at (checked by the Cache
        # with its own clock) is the authority, diskcache's expiry only reclaims space.
        self._cache().set(key, value, expire=ttl, retry=True)

    def delete(self, key: str) -> None:
        self._cache().delete(key, retry=True)

    def clear(self, prefix: str = "") -> None:
        db = self._cache()
        if not prefix:
            db.clear(retry=True)
            return
        for key in list(db.iterkeys()):
            if isinstance(key, str) and key.startswith(prefix):
                db.delete(key, retry=True)

    def close(self) -> None:
        with self._open_lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __len__(self) -> int:
        return len(self._cache())

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Keys starting with ``prefix`` (diskcache's key iterator; entries expired by diskcache
        are left out)."""
        for key in self._cache().iterkeys():
            if isinstance(key, str) and key.startswith(prefix):
                yield key


_DISK_CLASS: Any = None


def _bytes_only_disk(diskcache: Any) -> Any:
    """A diskcache Disk that refuses to unpickle: entries are bytes, keys are strings."""
    global _DISK_CLASS
    if _DISK_CLASS is None:

        class BytesOnlyDisk(diskcache.Disk):  # type: ignore[misc,name-defined]
            def fetch(self, mode: int, filename: str, value: Any, read: bool) -> Any:
                if mode == diskcache.core.MODE_PICKLE:
                    raise CacheBackendError("refusing to unpickle a disk entry")
                return super().fetch(mode, filename, value, read)

            def get(self, key: Any, raw: bool) -> Any:
                if not raw:
                    raise CacheBackendError("refusing to unpickle a disk key")
                return super().get(key, raw)

        _DISK_CLASS = BytesOnlyDisk
    return _DISK_CLASS
