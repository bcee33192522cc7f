"""The entry envelope: how a cached value becomes bytes and back, versioned.

Layout: ``b"LS"``, one version byte, then JSON ``[kind, created_at, expires_at, data]``:

- ``kind``: ``"chat"``, ``"text"``, ``"embedding"``, ``"transcription"`` for responses,
  ``"embedding-item"`` for one vector of an embedding batch, ``"value"`` for anything stored
  with ``Cache.add_cache``;
- ``created_at``: Unix time the entry was made (for ``s-maxage``);
- ``expires_at``: Unix time after which the entry is a miss, or ``null``;
- ``data``: the response as the upstream sent it (JSON), or the stored value.

Anything else (other bytes, a truncated entry, a newer version) raises
:class:`~llmstash.exceptions.CorruptEntryError`; the cache treats it as a miss and deletes it.
Only JSON is ever decoded: a stored entry cannot execute code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from llmstash.exceptions import CorruptEntryError

MAGIC = b"LS"
VERSION = 1
_HEADER = MAGIC + bytes([VERSION])
KINDS = frozenset({"chat", "text", "embedding", "embedding-item", "transcription", "value"})


@dataclass(slots=True)  # not frozen: frozen dataclasses are slow to build on the hit path
class Entry:
    kind: str
    created_at: float
    expires_at: float | None
    data: Any

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def age(self, now: float) -> float:
        return max(0.0, now - self.created_at)


def encode(kind: str, data: Any, created_at: float, expires_at: float | None) -> bytes:
    """Bytes for a new entry. Raises TypeError when ``data`` is not JSON-serializable."""
    try:
        return _HEADER + orjson.dumps([kind, created_at, expires_at, data])
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"a cache entry must be JSON-serializable: {exc}") from None


def decode(raw: bytes) -> Entry:
    """The entry in ``raw``; raises CorruptEntryError when it is not a valid envelope."""
    if raw[:2] != MAGIC:
        raise CorruptEntryError("not an llmstash entry")
    if raw[2:3] != _HEADER[2:3]:
        raise CorruptEntryError(f"entry version {raw[2:3].hex() or 'missing'} is not {VERSION}")
    try:
        kind, created_at, expires_at, data = orjson.loads(raw[3:])
    except (orjson.JSONDecodeError, ValueError, TypeError):
        raise CorruptEntryError("entry body is damaged or truncated") from None
    if (
        not isinstance(kind, str)
        or kind not in KINDS
        or not isinstance(created_at, (int, float))
        or not (expires_at is None or isinstance(expires_at, (int, float)))
    ):
        raise CorruptEntryError("entry header fields are invalid")
    return Entry(kind, float(created_at), expires_at, data)
