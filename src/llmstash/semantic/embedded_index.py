"""An in-process vector index on numpy, persisted to a directory (``Cache(type="semantic")``).

Entries are grouped by scope, so a search only ever reads the vectors of its own scope. Up to
``EXACT_LIMIT`` vectors in a scope are searched exactly (one matrix-vector product); past that a
256-bit SimHash of every vector (random hyperplanes, fixed seed) picks about ``CANDIDATES``
nearest by Hamming distance and those are scored exactly, so a lookup in 100,000 entries reads
about 4 MB instead of 150 MB. The score returned is always the exact cosine; the price is recall:
a true nearest neighbour is missed only when over ``CANDIDATES`` entries of its scope hash closer
to the query than it does, which at cosine 0.85 and above is rare (and costs a miss, never a
wrong hit).

Persistence uses safe formats only: a snapshot (``vectors-<generation>.npy``, read with
``allow_pickle=False``, beside ``meta.json``) and an append-only journal of JSON lines
(``journal-<generation>.jsonl``; vectors as base64 float32). The journal is folded into a new
snapshot when it grows past the number of live entries, and on ``close()``. A damaged last
journal line (a crash mid-write) is skipped; a damaged snapshot starts the index empty. One
process writes a directory at a time; another process that opens it sees the entries as of then.

Bounds: at most ``max_entries`` entries (least recently used or stored evicted first); expired
entries are never returned and are dropped when met.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from llmstash.exceptions import ConfigurationError
from llmstash.semantic._blas import single_threaded
from llmstash.semantic.index import Match, Vector

logger = logging.getLogger("llmstash")

EXACT_LIMIT = 8_192
CANDIDATES = 512
HASH_BITS = 256
DEFAULT_MAX_ENTRIES = 1_000_000
_WORDS = HASH_BITS // 64


class _Segment:
    """The vectors of one scope: rows 0..size-1 are live."""

    __slots__ = ("bits", "expires", "ids", "size", "vectors")

    def __init__(self, dimensions: int, capacity: int = 16) -> None:
        self.ids: list[str] = []
        self.size = 0
        self.vectors = np.zeros((capacity, dimensions), dtype=np.float32)
        self.bits = np.zeros((_WORDS, capacity), dtype=np.uint64)  # transposed: one row per 64-bit word
        self.expires = np.full(capacity, math.inf, dtype=np.float64)

    def append(self, id: str, vector: Vector, bits: npt.NDArray[np.uint64], expires_at: float) -> int:
        if self.size == len(self.vectors):
            capacity = 2 * len(self.vectors)
            self.vectors = np.resize(self.vectors, (capacity, self.vectors.shape[1]))
            grown = np.zeros((_WORDS, capacity), dtype=np.uint64)
            grown[:, : self.size] = self.bits[:, : self.size]
            self.bits = grown
            self.expires = np.resize(self.expires, capacity)
        row = self.size
        self.vectors[row] = vector
        self.bits[:, row] = bits
        self.expires[row] = expires_at
        self.ids.append(id)
        self.size += 1
        return row

    def remove(self, row: int) -> str | None:
        """Remove a row by moving the last row into it; returns the id that moved (or None)."""
        last = self.size - 1
        moved = None
        if row != last:
            self.vectors[row] = self.vectors[last]
            self.bits[:, row] = self.bits[:, last]
            self.expires[row] = self.expires[last]
            self.ids[row] = moved = self.ids[last]
        self.ids.pop()
        self.size = last
        return moved


class EmbeddedIndex:
    """A numpy vector index; ``directory=None`` keeps it in memory only."""

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries <= 0:
            raise ConfigurationError(f"max_semantic_entries must be a positive integer, got {max_entries!r}")
        self.directory = Path(directory) if directory is not None else None
        self.max_entries = max_entries
        self.dimensions: int | None = None
        self._clock = clock
        self._lock = threading.RLock()
        self._segments: dict[str, _Segment] = {}
        self._where: dict[str, tuple[str, int]] = {}
        self._payloads: dict[str, dict[str, Any]] = {}
        self._recency: OrderedDict[str, None] = OrderedDict()
        self._planes: npt.NDArray[np.float32] | None = None
        self._loaded = False
        self._generation = 0
        self._journal: Any = None
        self._journal_lines = 0
        self._buffers: tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint8], npt.NDArray[np.uint16]] | None = None

    def __len__(self) -> int:
        with self._lock:
            self._load()
            return len(self._where)

    # ----- hashing ---------------------------------------------------------------------------------

    def _hash(self, vectors: Vector) -> npt.NDArray[np.uint64]:
        """SimHash bits of each row: shape (rows, words)."""
        assert self._planes is not None
        signs = (vectors @ self._planes) > 0
        packed = np.packbits(signs, axis=-1)
        return np.ascontiguousarray(packed).view(np.uint64)

    def _set_dimensions(self, dimensions: int) -> None:
        if self.dimensions is None:
            self.dimensions = dimensions
            self._planes = np.random.default_rng(20240611).standard_normal((dimensions, HASH_BITS)).astype(np.float32)
        elif dimensions != self.dimensions:
            raise ValueError(f"vector has {dimensions} dimensions, the index holds {self.dimensions}")

    # ----- the protocol ----------------------------------------------------------------------------

    def add(self, id: str, vector: Vector, scope: str, payload: dict[str, Any], expires_at: float | None) -> None:
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        with self._lock:
            self._load()
            self._add(id, vector, scope, payload, expires_at)
            self._log({"op": "add", "id": id, "scope": scope, "payload": payload, "exp": expires_at, "v": _b64(vector)})

    def _add(self, id: str, vector: Vector, scope: str, payload: dict[str, Any], expires_at: float | None) -> None:
        self._set_dimensions(len(vector))
        if id in self._where:
            self._remove(id)
        segment = self._segments.get(scope)
        if segment is None:
            segment = self._segments[scope] = _Segment(len(vector))
        bits = self._hash(vector[None, :])[0]
        row = segment.append(id, vector, bits, math.inf if expires_at is None else float(expires_at))
        self._where[id] = (scope, row)
        self._payloads[id] = payload
        self._recency[id] = None
        while len(self._where) > self.max_entries:
            oldest = next(iter(self._recency))
            self._remove(oldest)
            self._log({"op": "del", "id": oldest})

    def _remove(self, id: str) -> None:
        scope, row = self._where.pop(id)
        self._payloads.pop(id, None)
        self._recency.pop(id, None)
        segment = self._segments[scope]
        moved = segment.remove(row)
        if moved is not None:
            self._where[moved] = (scope, row)
        if segment.size == 0:
            del self._segments[scope]

    def search(self, vector: Vector, k: int, scope: str) -> list[Match]:
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        with self._lock:
            self._load()
            segment = self._segments.get(scope)
            if segment is None or segment.size == 0 or k <= 0:
                return []
            if len(vector) != self.dimensions:
                raise ValueError(f"vector has {len(vector)} dimensions, the index holds {self.dimensions}")
            n = segment.size
            with single_threaded():
                if n <= EXACT_LIMIT:
                    rows = np.arange(n)
                    scores = segment.vectors[:n] @ vector
                else:
                    rows = self._candidates(segment, vector)
                    scores = segment.vectors[rows] @ vector
            now = self._clock()
            found: list[Match] = []
            expired: list[str] = []
            for position in self._best_first(scores, k, segment.expires[rows] <= now):
                row = int(rows[position])
                id = segment.ids[row]
                if segment.expires[row] <= now:
                    expired.append(id)
                    continue
                found.append(Match(id, float(scores[position]), self._payloads[id]))
                if len(found) == k:
                    break
            for match in found:
                self._recency.move_to_end(match.id)
            for gone in expired:
                self._remove(gone)
                self._log({"op": "del", "id": gone})
            return found

    @staticmethod
    def _best_first(scores: npt.NDArray[np.float32], k: int, expired: npt.NDArray[np.bool_]) -> npt.NDArray[np.intp]:
        """Positions of the k best scores, best first, plus every expired one met (to drop them)."""
        live = int(len(scores) - expired.sum())
        wanted = min(len(scores), k + int(expired.sum())) if live else len(scores)
        if wanted >= len(scores):
            return np.argsort(-scores)
        top = np.argpartition(-scores, wanted - 1)[:wanted]
        return top[np.argsort(-scores[top])]

    def _candidates(self, segment: _Segment, vector: Vector) -> npt.NDArray[np.intp]:
        """Rows whose SimHash is among the ~CANDIDATES nearest to the query's (Hamming distance)."""
        n = segment.size
        query = self._hash(vector[None, :])[0]
        xor, count, distance = self._scratch(n)
        np.bitwise_xor(segment.bits[0, :n], query[0], out=xor)
        np.bitwise_count(xor, out=count)
        distance[:] = count
        for word in range(1, _WORDS):
            np.bitwise_xor(segment.bits[word, :n], query[word], out=xor)
            np.bitwise_count(xor, out=count)
            np.add(distance, count, out=distance)
        # the smallest distance d with at least CANDIDATES rows at or below it: a counting select
        at_or_below = np.cumsum(np.bincount(distance, minlength=HASH_BITS + 1))
        cutoff = int(np.searchsorted(at_or_below, min(CANDIDATES, n)))
        return np.flatnonzero(distance <= cutoff)

    def _scratch(self, n: int) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint8], npt.NDArray[np.uint16]]:
        """Reused buffers for the Hamming distances (searches hold the lock)."""
        buffers = self._buffers
        if buffers is None or len(buffers[0]) < n:
            size = max(n, 2 * len(buffers[0]) if buffers is not None else n)
            buffers = self._buffers = (np.empty(size, np.uint64), np.empty(size, np.uint8), np.empty(size, np.uint16))
        return buffers[0][:n], buffers[1][:n], buffers[2][:n]

    def delete(self, id: str) -> None:
        with self._lock:
            self._load()
            if id in self._where:
                self._remove(id)
                self._log({"op": "del", "id": id})

    def clear(self, prefix: str = "") -> None:
        with self._lock:
            self._load()
            self._clear(prefix)
            self._log({"op": "clear", "prefix": prefix})

    def _clear(self, prefix: str) -> None:
        if not prefix:
            self._segments.clear()
            self._where.clear()
            self._payloads.clear()
            self._recency.clear()
            return
        for id in [i for i in self._where if i.startswith(prefix)]:
            self._remove(id)

    def close(self) -> None:
        with self._lock:
            if self.directory is not None and self._loaded:
                with contextlib.suppress(OSError):
                    self._snapshot()
            if self._journal is not None:
                self._journal.close()
                self._journal = None
            self._loaded = False
            self._segments.clear()
            self._where.clear()
            self._payloads.clear()
            self._recency.clear()

    # ----- persistence -----------------------------------------------------------------------------

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        meta_path = self.directory / "meta.json"
        if meta_path.exists():
            try:
                self._read_snapshot(meta_path)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.warning("llmstash: the semantic index snapshot could not be read (%s); starting empty", type(exc).__name__)
                self._clear("")
        journal = self.directory / f"journal-{self._generation}.jsonl"
        if journal.exists():
            self._replay(journal)

    def _read_snapshot(self, meta_path: Path) -> None:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != 1:
            raise ValueError("unknown index format")
        self._generation = int(meta["generation"])
        ids, scopes, payloads, expires = meta["ids"], meta["scopes"], meta["payloads"], meta["expires"]
        if not ids:
            return
        assert self.directory is not None
        vectors = np.load(self.directory / f"vectors-{self._generation}.npy", allow_pickle=False)
        if vectors.dtype != np.float32 or vectors.ndim != 2 or len(vectors) != len(ids):
            raise ValueError("vectors do not match the index metadata")
        self._set_dimensions(int(vectors.shape[1]))
        bits = self._hash(vectors)
        rows_of: dict[str, list[int]] = {}
        for row, scope in enumerate(scopes):
            rows_of.setdefault(str(scope), []).append(row)
        for scope, rows in rows_of.items():  # one bulk copy per scope (a row-by-row add hashes each row alone)
            segment = self._segments[scope] = _Segment(self.dimensions or 0, capacity=max(16, len(rows)))
            segment.vectors[: len(rows)] = vectors[rows]
            segment.bits[:, : len(rows)] = bits[rows].T
            segment.expires[: len(rows)] = [math.inf if expires[r] is None else float(expires[r]) for r in rows]
            segment.ids = [str(ids[r]) for r in rows]
            segment.size = len(rows)
            for position, row in enumerate(rows):
                id = str(ids[row])
                self._where[id] = (scope, position)
                self._payloads[id] = dict(payloads[row])
                self._recency[id] = None

    def _replay(self, journal: Path) -> None:
        with open(journal, encoding="utf-8") as handle:
            for line in handle:
                self._journal_lines += 1
                try:
                    record = json.loads(line)
                    op = record["op"]
                    if op == "add":
                        vector = np.frombuffer(base64.b64decode(record["v"]), dtype=np.float32)
                        self._add(str(record["id"]), vector, str(record["scope"]), dict(record["payload"]), record["exp"])
                    elif op == "del":
                        if record["id"] in self._where:
                            self._remove(record["id"])
                    elif op == "clear":
                        self._clear(str(record["prefix"]))
                except (ValueError, KeyError, TypeError):
                    logger.debug("llmstash: skipped a damaged semantic index journal line")

    def _log(self, record: dict[str, Any]) -> None:
        if self.directory is None:
            return
        if self._journal is None:
            self._journal = open(self.directory / f"journal-{self._generation}.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self._journal.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._journal.flush()
        self._journal_lines += 1
        if self._journal_lines > max(1024, len(self._where)):
            self._snapshot()

    def _snapshot(self) -> None:
        """Write the live entries as a new generation, then drop the old files."""
        assert self.directory is not None
        now = self._clock()
        ids: list[str] = []
        scopes: list[str] = []
        rows: list[Vector] = []
        expires: list[float | None] = []
        for scope, segment in self._segments.items():
            for row in range(segment.size):
                if segment.expires[row] <= now:
                    continue
                ids.append(segment.ids[row])
                scopes.append(scope)
                rows.append(segment.vectors[row])
                expiry = float(segment.expires[row])
                expires.append(None if math.isinf(expiry) else expiry)
        old = self._generation
        new = old + 1
        if rows:
            with open(self.directory / f"vectors-{new}.npy", "wb") as handle:
                np.save(handle, np.stack(rows).astype(np.float32), allow_pickle=False)
        meta = {
            "format": 1,
            "generation": new,
            "dimensions": self.dimensions,
            "ids": ids,
            "scopes": scopes,
            "payloads": [self._payloads[i] for i in ids],
            "expires": expires,
        }
        temporary = self.directory / "meta.json.tmp"
        temporary.write_text(json.dumps(meta, separators=(",", ":")), encoding="utf-8")
        os.replace(temporary, self.directory / "meta.json")
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        self._generation, self._journal_lines = new, 0
        for stale in (f"vectors-{old}.npy", f"journal-{old}.jsonl"):
            with contextlib.suppress(FileNotFoundError):
                (self.directory / stale).unlink()


def _b64(vector: Vector) -> str:
    return base64.b64encode(np.ascontiguousarray(vector, dtype=np.float32).tobytes()).decode("ascii")
