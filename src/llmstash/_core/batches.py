"""Embedding batches, without I/O: split an input into items, find the missing ones, merge.

Each input item is its own cache entry. A batch with some cached items sends only the missing
ones upstream (each distinct item once, in first-seen order) and returns every item in the
caller's order with indices 0..N-1.
"""

from __future__ import annotations

from typing import Any

from llmstash.exceptions import ConfigurationError


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def split_input(payload: Any) -> list[Any]:
    """The items of an embedding ``input``: a string, a token array, or a list of either."""
    if isinstance(payload, str) and payload:
        return [payload]
    if isinstance(payload, list) and payload:
        if all(_is_token(x) for x in payload):
            return [payload]  # one input given as token ids
        if all((isinstance(x, str) and x) or (isinstance(x, list) and x and all(_is_token(t) for t in x)) for x in payload):
            return list(payload)
    raise ConfigurationError(
        "input must be a non-empty string, a list of non-empty strings, a list of token ids, or a list of "
        "non-empty token-id lists"
    )


def missing_items(keys: list[str], items: list[Any], found: list[Any]) -> list[tuple[str, Any]]:
    """``(key, item)`` for each distinct item not found in the cache, in first-seen order."""
    seen: set[str] = set()
    missing = []
    for key, item, entry in zip(keys, items, found, strict=True):
        if entry is None and key not in seen:
            seen.add(key)
            missing.append((key, item))
    return missing


def fresh_vectors(missing: list[tuple[str, Any]], body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The upstream's vectors for the missing items, by key. Raises ValueError when the upstream
    returned a different number of vectors than it was sent items."""
    data = sorted(body.get("data") or [], key=lambda item: item.get("index", 0))
    if len(data) != len(missing):
        raise ValueError(f"the upstream returned {len(data)} embeddings for {len(missing)} inputs")
    model = body.get("model")
    return {key: {"embedding": item.get("embedding"), "model": model} for (key, _), item in zip(missing, data, strict=True)}


def merge(keys: list[str], found: list[dict[str, Any] | None], fresh: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The response's ``data``: every item in the caller's order, indices 0..N-1."""
    merged = []
    for index, (key, cached) in enumerate(zip(keys, found, strict=True)):
        item = cached if cached is not None else fresh[key]
        merged.append({"object": "embedding", "index": index, "embedding": item["embedding"]})
    return merged
