"""Measure the semantic matching rule on a labelled set of prompt pairs.

Each pair is ``{"a": ..., "b": ..., "label": "match" | "different", "kind": ...}``; ``kind`` is
``paraphrase`` for matches and the trap (``numbers``, ``negation``, ``entity``, ``direction``,
``related``) for the others. A pair "hits" when the guard signatures are equal and the cosine of
the embeddings reaches the threshold: exactly the rule the cache applies (with the rest of the
request equal). Used by ``make bench`` and by the tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmstash.semantic.embedders import Embedder
from llmstash.semantic.guard import signature


def load_pairs(path: str | Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@dataclass
class Scored:
    """Cosine and guard verdict of every pair."""

    pairs: list[dict[str, str]]
    cosine: np.ndarray[Any, Any]
    guard_ok: np.ndarray[Any, Any]


@dataclass
class Quality:
    threshold: float
    guarded: bool
    hits: int
    true_hits: int
    paraphrases: int
    trap_hits: dict[str, int] = field(default_factory=dict)
    traps: dict[str, int] = field(default_factory=dict)

    @property
    def precision(self) -> float:
        return self.true_hits / self.hits if self.hits else 1.0

    @property
    def paraphrase_hit_rate(self) -> float:
        return self.true_hits / self.paraphrases if self.paraphrases else 0.0


def score(pairs: Sequence[dict[str, str]], embedder: Embedder) -> Scored:
    texts = sorted({p["a"] for p in pairs} | {p["b"] for p in pairs})
    index = {text: i for i, text in enumerate(texts)}
    vectors = embedder.embed(texts)
    a = vectors[[index[p["a"]] for p in pairs]]
    b = vectors[[index[p["b"]] for p in pairs]]
    cosine = np.einsum("ij,ij->i", a, b)
    guard_ok = np.array([signature(p["a"]) == signature(p["b"]) for p in pairs])
    return Scored(list(pairs), cosine, guard_ok)


def quality(scored: Scored, threshold: float, guarded: bool = True) -> Quality:
    hit = scored.cosine >= threshold
    if guarded:
        hit = hit & scored.guard_ok
    result = Quality(threshold, guarded, int(hit.sum()), 0, 0)
    for pair, was_hit in zip(scored.pairs, hit, strict=True):
        if pair["label"] == "match":
            result.paraphrases += 1
            result.true_hits += int(was_hit)
        else:
            kind = pair["kind"]
            result.traps[kind] = result.traps.get(kind, 0) + 1
            result.trap_hits[kind] = result.trap_hits.get(kind, 0) + int(was_hit)
    return result


def table(scored: Scored, thresholds: Iterable[float]) -> list[Quality]:
    return [quality(scored, t, guarded) for t in thresholds for guarded in (True, False)]
