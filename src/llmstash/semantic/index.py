"""The vector index protocol of the semantic tier.

An index holds, per id, one normalized vector, a ``scope`` (a hash: only entries of the same scope
are ever compared), a small JSON-able ``payload`` and an optional expiry time. ``search`` returns
the ``k`` entries of one scope nearest to a vector by cosine similarity (best first), leaving out
expired ones. Adding an id that exists replaces it. Implementations: ``EmbeddedIndex`` (numpy,
persisted to a directory), ``RedisIndex`` (RediSearch) and ``QdrantIndex`` (qdrant-client).
Indexes raise on failure; the semantic tier above them fails open.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]


class Match(NamedTuple):
    id: str
    score: float
    """Cosine similarity, -1..1."""
    payload: dict[str, Any]


class VectorIndex(Protocol):
    dimensions: int | None

    def add(self, id: str, vector: Vector, scope: str, payload: dict[str, Any], expires_at: float | None) -> None: ...

    def search(self, vector: Vector, k: int, scope: str) -> list[Match]: ...

    def delete(self, id: str) -> None: ...

    def clear(self, prefix: str = "") -> None:
        """Remove every entry whose id starts with ``prefix`` (all of them by default)."""
        ...

    def close(self) -> None: ...

    def __len__(self) -> int: ...
