"""The semantic tier: what a Cache of a semantic type consults after an exact miss.

The matching rule. Two requests may share an answer semantically only when everything but the
text of the last user message is equal — the request family, the model (or caching group) and
endpoint, every keyed parameter (``temperature``, ``tools``, ``user``, ...), the system prompt and
every earlier turn, the Cache's and the call's namespace — and the embedding model is the same.
Those go into a ``scope`` hash that filters the vector search. Within a scope, the last user
message (a chat's last message, which must have role ``user``; a text completion's ``prompt``
string) is embedded and compared by cosine — when the model sees all of it: a longer text is
matched exactly only — and a hit needs both ``similarity >= threshold``
and an equal guard signature (numbers, negation, polarity, entities: see ``guard``), which is
folded into the scope too. Requests of other shapes (a last message that is not the user's, image
parts, a list of prompts, embeddings, transcriptions) use the exact tier only.

Where things live. The answers stay in the exact storage under their exact keys; the vector index
holds, per exact key, the vector, the scope and the expiry. A semantic hit reads the matched key's
entry from the exact storage (so TTL, ``s-maxage`` and corrupt-entry handling are the exact
tier's), and a vector whose entry is gone is dropped. Re-storing a request replaces its vector
(the index id is the exact key). The index never holds prompt text.

Fail-open: a failing embedder or index never fails a call: the call goes upstream; the failure
is counted in ``stats()["errors"]`` and logged once per kind, with key hashes only.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from llmstash._core.envelope import Entry
from llmstash._core.keys import canonical_bytes, digest, with_namespace
from llmstash.backends.base import Clock, Storage
from llmstash.exceptions import ConfigurationError
from llmstash.semantic.embedders import DEFAULT_MODEL, Embedder, make_embedder
from llmstash.semantic.guard import signature
from llmstash.semantic.index import Vector, VectorIndex

if TYPE_CHECKING:
    from llmstash._request import Request
    from llmstash.caching.cache import Cache, Plan

DEFAULT_THRESHOLD = 0.85
"""Measured on bench/data/semantic_pairs.jsonl with all-MiniLM-L6-v2 (see README)."""
NEIGHBOURS = 4
"""How many nearest entries a lookup considers (an entry found gone is skipped for the next)."""


@dataclass(slots=True)
class SemanticEntry(Entry):
    """An entry found by similarity: ``similarity`` is the cosine, ``source`` the matched key."""

    similarity: float = 0.0
    source: str = ""


@dataclass(slots=True)
class Probe:
    scope: str
    text: str
    vector: Vector | None = None


def check_threshold(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ConfigurationError(f"similarity_threshold must be a number from 0 to 1 (cosine similarity), got {value!r}")
    return float(value)


def compared_text(request: Request) -> tuple[str, Any] | None:
    """(the text compared, the rest of the payload) or None when the request is not eligible."""
    if request.family == "text":
        prompt = request.payload
        return (prompt, None) if isinstance(prompt, str) and prompt.strip() else None
    if request.family != "chat":
        return None
    messages = request.payload
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return None
    last = messages[-1]
    if last.get("role") != "user":
        return None
    content = last.get("content")
    if isinstance(content, list):
        if not content or not all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
        ):
            return None
        content = "\n".join(part["text"] for part in content)
    if not isinstance(content, str) or not content.strip():
        return None
    rest = {"earlier": messages[:-1], "last": {name: value for name, value in last.items() if name != "content"}}
    return content, rest


class SemanticTier:
    """An embedder, a vector index and a threshold, over the exact storage of a Cache."""

    def __init__(
        self, index: VectorIndex, embedder: Embedder, threshold: float, exact: Storage, answers_in_index: bool = False
    ) -> None:
        self.index = index
        self.answers_in_index = answers_in_index
        """Keep each answer's envelope in the index payload too (Qdrant: every process sharing the
        server finds the answers there, whatever its own exact storage holds)."""
        self.embedder = embedder
        self.threshold = check_threshold(threshold)
        self.exact = exact

    def __repr__(self) -> str:
        return f"SemanticTier(index={type(self.index).__name__}, model={self.embedder.name!r}, threshold={self.threshold})"

    # ----- what is compared --------------------------------------------------------------------------

    def probe(self, cache: Cache, request: Request) -> Probe | None:
        if cache.customized:
            return None  # the user's own keys or storage: exact only
        found = compared_text(request)
        if found is None:
            return None
        text, rest = found
        fits = getattr(self.embedder, "fits", None)
        if fits is not None and not fits(text):
            return None  # the model would see only the beginning: two texts differing later would match
        base = request._key(request.family, {"semantic-rest": rest})
        namespace = with_namespace("", cache.namespace, request.controls.namespace)
        material = canonical_bytes([1, namespace, self.embedder.name, base, signature(text)])
        return Probe(hashlib.sha256(material).hexdigest()[:32], text)

    def _vector(self, probe: Probe) -> Vector:
        if probe.vector is None:
            matrix = self.embedder.embed([probe.text])
            probe.vector = np.ascontiguousarray(matrix[0], dtype=np.float32)
        return probe.vector

    # ----- lookups and stores (sync; the async twins run them in a worker thread) ---------------------

    def lookup(self, cache: Cache, plan: Plan, request: Request) -> SemanticEntry | None:
        """The entry of the most similar earlier request in scope, or None."""
        try:
            probe = self.probe(cache, request)
            if probe is None:
                return None
            plan.probe = probe
            matches = self.index.search(self._vector(probe), NEIGHBOURS, probe.scope)
            for match in matches:
                if match.score < self.threshold:
                    break
                raw = self.exact.get(match.id)
                if raw is None and self.answers_in_index and isinstance(match.payload.get("entry"), str):
                    raw = base64.b64decode(match.payload["entry"])
                entry, drop = cache._accept(match.id, raw, plan.max_age)
                if entry is None:
                    if drop:
                        self.exact.delete(match.id)
                    if drop or raw is None:
                        self.index.delete(match.id)  # its answer is gone: so is its vector
                    continue
                if entry.kind != request.family:
                    continue
                similarity = min(1.0, round(match.score, 4))
                return SemanticEntry(entry.kind, entry.created_at, entry.expires_at, entry.data, similarity, match.id)
        except Exception as exc:
            self._failed(cache, "lookup", plan.key, exc)
        return None

    async def alookup(self, cache: Cache, plan: Plan, request: Request) -> SemanticEntry | None:
        return await asyncio.to_thread(self.lookup, cache, plan, request)

    def store(self, cache: Cache, plan: Plan, request: Request, blob: bytes) -> None:
        """Index the request just stored under ``plan.key`` (replacing its earlier vector)."""
        try:
            probe = plan.probe if isinstance(plan.probe, Probe) else self.probe(cache, request)
            if probe is None:
                return
            now = cache._clock()
            expires_at = None if plan.ttl is None else now + plan.ttl
            payload: dict[str, Any] = {"stored": round(now, 3)}
            if self.answers_in_index:
                payload["entry"] = base64.b64encode(blob).decode("ascii")
            self.index.add(plan.key, self._vector(probe), probe.scope, payload, expires_at)
        except Exception as exc:
            self._failed(cache, "store", plan.key, exc)

    async def astore(self, cache: Cache, plan: Plan, request: Request, blob: bytes) -> None:
        await asyncio.to_thread(self.store, cache, plan, request, blob)

    def _failed(self, cache: Cache, operation: str, key: str, exc: BaseException) -> None:
        cache.record("errors")
        cache._log_once(
            (f"semantic {operation}", type(exc).__name__),
            "llmstash: %s cache: semantic %s failed for key hash %s (%s); the call goes on without the semantic tier",
            cache.type,
            operation,
            digest(key),
            type(exc).__name__,
        )


# ----- the Storage a semantic Cache holds: the exact storage, with the tier attached -----------------


class SemanticStorage(Storage):
    """Delegates bytes to the exact storage; deletes and clears reach the vector index too."""

    name = "semantic"
    kind: ClassVar[str] = "semantic"
    own_options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, exact: Storage, tier: SemanticTier, clock: Clock = time.time) -> None:
        super().__init__(clock=clock)
        self.exact = exact
        self.semantic = tier

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.exact!r}, {self.semantic!r})"

    @classmethod
    def from_options(cls, options: dict[str, Any], clock: Clock) -> Storage:
        return build(cls.kind, options, clock)

    def get(self, key: str) -> bytes | None:
        return self.exact.get(key)

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        self.exact.set(key, value, ttl)

    def delete(self, key: str) -> None:
        self.exact.delete(key)
        self.semantic.index.delete(key)

    def clear(self, prefix: str = "") -> None:
        self.exact.clear(prefix)
        self.semantic.index.clear(prefix)

    def close(self) -> None:
        try:
            self.exact.close()
        finally:
            self.semantic.index.close()

    def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return self.exact.get_many(keys)

    def keys(self, prefix: str = "") -> Iterable[str]:
        """The exact storage's keys (each semantic entry's vector is indexed under its key)."""
        return self.exact.keys(prefix)

    def set_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        self.exact.set_many(items, ttl)

    async def aget(self, key: str) -> bytes | None:
        return await self.exact.aget(key)

    async def aset(self, key: str, value: bytes, ttl: float | None) -> None:
        await self.exact.aset(key, value, ttl)

    async def adelete(self, key: str) -> None:
        await self.exact.adelete(key)
        await asyncio.to_thread(self.semantic.index.delete, key)

    async def aget_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return await self.exact.aget_many(keys)

    async def aset_many(self, items: Sequence[tuple[str, bytes]], ttl: float | None) -> None:
        await self.exact.aset_many(items, ttl)

    # cross-process single flight: whatever the exact storage offers
    @property
    def supports_locks(self) -> bool:
        return bool(getattr(self.exact, "supports_locks", False))

    def __getattr__(self, name: str) -> Any:
        if name in ("try_lock", "locked", "unlock", "atry_lock", "alocked", "aunlock", "flush", "aflush"):
            return getattr(self.exact, name)
        raise AttributeError(name)


class EmbeddedSemanticStorage(SemanticStorage):
    kind = "semantic"


class RedisSemanticStorage(SemanticStorage):
    kind = "redis-semantic"


class QdrantSemanticStorage(SemanticStorage):
    kind = "qdrant-semantic"


class DualSemanticStorage(SemanticStorage):
    kind = "dual-semantic"


# ----- building a tier from Cache(...) parameters ----------------------------------------------------

_COMMON = {"similarity_threshold", "semantic_embedding_params"}
_PARAMETERS: dict[str, set[str]] = {
    "semantic": _COMMON
    | {"semantic_cache_embedding_model", "semantic_cache_dir", "max_semantic_entries", "max_disk_bytes", "disk_timeout"},
    "redis-semantic": _COMMON
    | {"redis_semantic_cache_embedding_model", "redis_semantic_cache_index_name", "redis_semantic_index_algorithm"},
    "qdrant-semantic": _COMMON
    | {
        "qdrant_semantic_cache_embedding_model",
        "qdrant_api_base",
        "qdrant_api_key",
        "qdrant_collection_name",
        "qdrant_quantization_config",
        "qdrant_path",
        "qdrant_exact_type",
    },
    "dual-semantic": _COMMON
    | {"semantic_cache_embedding_model", "semantic_backend", "semantic_cache_dir", "max_semantic_entries", "exact_type"},
}
_MODEL_PARAMETER = {
    "semantic": "semantic_cache_embedding_model",
    "dual-semantic": "semantic_cache_embedding_model",
    "redis-semantic": "redis_semantic_cache_embedding_model",
    "qdrant-semantic": "qdrant_semantic_cache_embedding_model",
}
DEFAULT_DIRECTORY = ".llmstash_semantic"
MEMORY = ":memory:"


def _take(options: dict[str, Any], kind: str) -> dict[str, Any]:
    """Split off this type's semantic parameters; what remains goes to the exact storage."""
    return {name: options.pop(name) for name in list(options) if name in _PARAMETERS[kind]}


def _refuse_rest(kind: str, rest: dict[str, Any], exact_accepts: frozenset[str] = frozenset()) -> None:
    unknown = sorted(set(rest) - exact_accepts)
    if unknown:
        accepted = ", ".join(sorted(_PARAMETERS[kind] | set(exact_accepts)))
        raise ConfigurationError(
            f"Cache(type={kind!r}) got unknown parameter {unknown[0]!r}; parameters for this type: {accepted}"
        )


def _embedder(kind: str, own: dict[str, Any]) -> Embedder:
    params = own.get("semantic_embedding_params") or {}
    if not isinstance(params, dict):
        raise ConfigurationError(
            "semantic_embedding_params must be a dict of llmstash.embedding() keywords (api_base, api_key, ...)"
        )
    return make_embedder(own.get(_MODEL_PARAMETER[kind], DEFAULT_MODEL), params)


def _embedded_index(directory: Any, max_entries: Any, clock: Clock) -> VectorIndex:
    from llmstash.semantic.embedded_index import DEFAULT_MAX_ENTRIES, EmbeddedIndex

    if directory is not None and not isinstance(directory, (str, os.PathLike)):
        raise ConfigurationError(f"semantic_cache_dir must be a path or ':memory:', got {directory!r}")
    path = None if directory == MEMORY else os.path.join(os.fspath(directory or DEFAULT_DIRECTORY), "index")
    return EmbeddedIndex(path, DEFAULT_MAX_ENTRIES if max_entries is None else max_entries, clock)


def _local_exact(kind: str, directory: Any, options: dict[str, Any], clock: Clock) -> Storage:
    from llmstash.backends.disk import DiskStorage
    from llmstash.backends.memory import MemoryStorage

    if directory == MEMORY:
        _refuse_rest(kind, options)
        return MemoryStorage(clock=clock)
    _refuse_rest(kind, options, frozenset({"max_disk_bytes", "disk_timeout"}))
    return DiskStorage(disk_cache_dir=os.path.join(os.fspath(directory or DEFAULT_DIRECTORY), "entries"), clock=clock, **options)


def build(kind: str, options: dict[str, Any], clock: Clock) -> Storage:
    """The Storage of ``Cache(type=kind, **options)``: its exact storage with a tier attached."""
    from llmstash.backends import storage_class

    options = dict(options)
    own = _take(options, kind)
    threshold = check_threshold(own.get("similarity_threshold", DEFAULT_THRESHOLD))
    embedder = _embedder(kind, own)
    index: VectorIndex
    exact: Storage
    if kind == "semantic":
        directory = own.get("semantic_cache_dir")
        index = _embedded_index(directory, own.get("max_semantic_entries"), clock)
        exact = _local_exact(kind, directory, options, clock)
        cls: type[SemanticStorage] = EmbeddedSemanticStorage
    elif kind == "redis-semantic":
        from llmstash.semantic.redis_index import RedisIndex

        exact = storage_class("redis").from_options(options, clock)
        index = RedisIndex(
            exact,
            own.get("redis_semantic_cache_index_name") or "llmstash-semantic",
            algorithm=own.get("redis_semantic_index_algorithm") or "HNSW",
            clock=clock,
        )
        cls = RedisSemanticStorage
    elif kind == "qdrant-semantic":
        from llmstash.semantic.qdrant_index import QdrantIndex

        exact_type = own.get("qdrant_exact_type") or "local"
        if exact_type not in ("local", "disk", "redis"):
            raise ConfigurationError(f"qdrant_exact_type must be 'local', 'disk' or 'redis', got {exact_type!r}")
        exact = storage_class(exact_type).from_options(options, clock)
        index = QdrantIndex(
            url=own.get("qdrant_api_base"),
            api_key=own.get("qdrant_api_key"),
            path=own.get("qdrant_path"),
            collection=own.get("qdrant_collection_name") or "llmstash-semantic",
            quantization=own.get("qdrant_quantization_config"),
            clock=clock,
        )
        return QdrantSemanticStorage(exact, SemanticTier(index, embedder, threshold, exact, answers_in_index=True), clock)
    else:  # dual-semantic
        backend = own.get("semantic_backend") or "semantic"
        redis_given = any(name in options for name in ("host", "port", "url", "password", "redis_startup_nodes"))
        exact_type = own.get("exact_type") or ("redis" if redis_given else "local")
        if backend != "semantic":
            raise ConfigurationError(
                f"semantic_backend must be 'semantic' (embedded) for dual-semantic, got {backend!r}; "
                "use type='redis-semantic' or 'qdrant-semantic' for a shared index"
            )
        if exact_type not in ("local", "disk", "redis"):
            raise ConfigurationError(f"exact_type must be 'local', 'disk' or 'redis', got {exact_type!r}")
        exact = storage_class(exact_type).from_options(options, clock)
        index = _embedded_index(own.get("semantic_cache_dir", MEMORY), own.get("max_semantic_entries"), clock)
        cls = DualSemanticStorage
    return cls(exact, SemanticTier(index, embedder, threshold, exact), clock)
