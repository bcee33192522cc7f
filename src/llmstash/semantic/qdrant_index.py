"""A vector index on Qdrant, through qdrant-client: a Qdrant server (``qdrant_api_base`` URL,
``qdrant_api_key``) or local mode (``qdrant_api_base=":memory:"`` or ``qdrant_path=<directory>``).

One point per entry: its id is a UUID derived from the entry id, its payload holds the id, the
scope (filtered on, with a keyword payload index on a server), the expiry (``exp``; searches
filter ``exp > now``, and expired points are purged every ``PURGE_EVERY`` writes) and the caller's
payload. The collection (cosine distance, optional quantization) is created on the first write.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from llmstash.exceptions import CacheBackendError, ConfigurationError
from llmstash.semantic.index import Match, Vector

PURGE_EVERY = 1000
TIMEOUT = 1
"""Seconds a request to a Qdrant server may take."""
RETRY_AFTER = 2.0
"""Seconds the index skips an unreachable Qdrant server before trying again (calls go upstream at once)."""
NO_EXPIRY = 1e300
_QUANTIZATIONS = ("scalar", "binary", "product")


def _import_qdrant() -> tuple[Any, Any]:
    try:
        from qdrant_client import QdrantClient, models
    except ImportError:
        raise ImportError('Cache(type="qdrant-semantic") needs qdrant-client: pip install "llmstash[semantic]"') from None
    return QdrantClient, models


def point_id(id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "llmstash:" + id))


class QdrantIndex:
    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        path: str | None = None,
        collection: str = "llmstash-semantic",
        quantization: Any = None,
        clock: Callable[[], float] = time.time,
        client: Any = None,
    ) -> None:
        if client is None and url is None and path is None:
            raise ConfigurationError(
                "type='qdrant-semantic' needs qdrant_api_base (a server URL, or ':memory:' for local mode) or qdrant_path"
            )
        if not isinstance(collection, str) or not collection:
            raise ConfigurationError(f"qdrant_collection_name must be a non-empty string, got {collection!r}")
        if (
            quantization is not None
            and not (isinstance(quantization, str) and quantization in _QUANTIZATIONS)
            and not hasattr(quantization, "model_dump")
        ):
            raise ConfigurationError(
                f"qdrant_quantization_config must be 'scalar', 'binary', 'product', None or a qdrant_client quantization model, "
                f"got {quantization!r}"
            )
        self.url, self.api_key, self.path = url, api_key, path
        self.collection = collection
        self.quantization = quantization
        self.dimensions: int | None = None
        self._clock = clock
        self._client = client
        self._lock = threading.Lock()
        self._ready = False
        self._writes = 0
        self._down_until = 0.0

    def __repr__(self) -> str:
        return f"QdrantIndex({self.url or self.path!r}, collection={self.collection!r})"  # never the API key

    def _check_up(self) -> None:
        if self._down_until and time.monotonic() < self._down_until:
            raise CacheBackendError("qdrant was unreachable moments ago; skipping it briefly")

    def _failed(self, exc: Exception) -> CacheBackendError | Exception:
        """A failure to reach the server (not an error answer, not a bad vector) makes the index
        skip Qdrant for ``RETRY_AFTER`` seconds."""
        if isinstance(exc, (ValueError, CacheBackendError)) or type(exc).__name__ == "UnexpectedResponse":
            return exc
        self._down_until = time.monotonic() + RETRY_AFTER
        return CacheBackendError(f"qdrant {type(exc).__name__}")

    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    QdrantClient, _ = _import_qdrant()
                    if self.path is not None:
                        self._client = QdrantClient(path=str(self.path))
                    elif self.url == ":memory:":
                        self._client = QdrantClient(location=":memory:")
                    else:
                        self._client = QdrantClient(
                            url=self.url, api_key=self.api_key, timeout=TIMEOUT, check_compatibility=False
                        )
        return self._client

    def _quantization_config(self, models: Any) -> Any:
        q = self.quantization
        if q is None or not isinstance(q, str):
            return q
        if q == "scalar":
            return models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, always_ram=True))
        if q == "binary":
            return models.BinaryQuantization(binary=models.BinaryQuantizationConfig(always_ram=True))
        return models.ProductQuantization(
            product=models.ProductQuantizationConfig(compression=models.CompressionRatio.X16, always_ram=True)
        )

    def _ensure_collection(self, dimensions: int) -> None:
        if self._ready:
            if dimensions != self.dimensions:
                raise ValueError(f"vector has {dimensions} dimensions, the collection holds {self.dimensions}")
            return
        _, models = _import_qdrant()
        client = self.client()
        if client.collection_exists(self.collection):
            params = client.get_collection(self.collection).config.params.vectors
            size = getattr(params, "size", None)
            if size is not None and size != dimensions:
                raise ValueError(f"Qdrant collection {self.collection!r} holds {size}-d vectors, the model makes {dimensions}-d")
        else:
            client.create_collection(
                self.collection,
                vectors_config=models.VectorParams(size=dimensions, distance=models.Distance.COSINE),
                quantization_config=self._quantization_config(models),
            )
            if self.url not in (None, ":memory:"):  # local mode has no payload indexes (it filters all the same)
                client.create_payload_index(self.collection, "scope", models.PayloadSchemaType.KEYWORD)
        self.dimensions = dimensions
        self._ready = True

    def _add(self, id: str, vector: Vector, scope: str, payload: dict[str, Any], expires_at: float | None) -> None:
        _, models = _import_qdrant()
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        self._ensure_collection(len(vector))
        point = models.PointStruct(
            id=point_id(id),
            vector=vector.tolist(),
            payload={"id": id, "scope": scope, "exp": NO_EXPIRY if expires_at is None else float(expires_at), "payload": payload},
        )
        self.client().upsert(self.collection, points=[point], wait=True)
        self._writes += 1
        if self._writes % PURGE_EVERY == 0:
            self._purge(models)

    def _purge(self, models: Any) -> None:
        expired = models.Filter(must=[models.FieldCondition(key="exp", range=models.Range(lte=self._clock()))])
        self.client().delete(self.collection, points_selector=models.FilterSelector(filter=expired), wait=False)

    def _exists(self) -> bool:
        return not (not self._ready and not self.client().collection_exists(self.collection))

    def _search(self, vector: Vector, k: int, scope: str) -> list[Match]:
        _, models = _import_qdrant()
        if k <= 0 or not self._exists():
            return []
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        condition = models.Filter(
            must=[
                models.FieldCondition(key="scope", match=models.MatchValue(value=scope)),
                models.FieldCondition(key="exp", range=models.Range(gt=self._clock())),
            ]
        )
        response = self.client().query_points(
            self.collection, query=vector.tolist(), query_filter=condition, limit=int(k), with_payload=True
        )
        return [Match(str(p.payload["id"]), float(p.score), dict(p.payload.get("payload") or {})) for p in response.points]

    def _delete(self, id: str) -> None:
        _, models = _import_qdrant()
        if not self._exists():
            return
        self.client().delete(self.collection, points_selector=models.PointIdsList(points=[point_id(id)]), wait=True)

    def _clear(self, prefix: str = "") -> None:
        _, models = _import_qdrant()
        if not self._exists():
            return
        client = self.client()
        if not prefix:
            client.delete_collection(self.collection)
            self._ready = False
            self.dimensions = None
            return
        offset = None
        doomed = []
        while True:
            points, offset = client.scroll(self.collection, limit=1000, offset=offset, with_payload=["id"], with_vectors=False)
            doomed += [p.id for p in points if str(p.payload.get("id", "")).startswith(prefix)]
            if offset is None:
                break
        for start in range(0, len(doomed), 1000):
            client.delete(self.collection, points_selector=models.PointIdsList(points=doomed[start : start + 1000]), wait=True)

    def _guarded(self, operation: Any, *args: Any) -> Any:
        self._check_up()
        try:
            result = operation(*args)
        except Exception as exc:
            failure = self._failed(exc)
            if failure is exc:
                raise
            raise failure from exc
        self._down_until = 0.0
        return result

    def add(self, id: str, vector: Vector, scope: str, payload: dict[str, Any], expires_at: float | None) -> None:
        self._guarded(self._add, id, vector, scope, payload, expires_at)

    def search(self, vector: Vector, k: int, scope: str) -> list[Match]:
        found: list[Match] = self._guarded(self._search, vector, k, scope)
        return found

    def delete(self, id: str) -> None:
        self._guarded(self._delete, id)

    def clear(self, prefix: str = "") -> None:
        self._guarded(self._clear, prefix)

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None
                self._ready = False

    def __len__(self) -> int:
        if not self._exists():
            return 0
        _, models = _import_qdrant()
        live = models.Filter(must=[models.FieldCondition(key="exp", range=models.Range(gt=self._clock()))])
        return int(self.client().count(self.collection, count_filter=live, exact=True).count)


__all__ = ["NO_EXPIRY", "QdrantIndex"]
