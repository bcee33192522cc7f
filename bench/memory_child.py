"""llmstash's side of the memory-per-entry workload, run by bench/workloads.py in a fresh process.

    .venv/bin/python bench/memory_child.py --entries 100000 --content-bytes 1024

Stores ``--entries`` distinct chat completions, each answering with ``--content-bytes`` characters,
in the in-memory cache (`Cache()`, as it comes), and prints one JSON object: the process's RSS just
before and just after (each after a full `gc.collect()`), how many entries the cache holds, and the
size of one stored entry. Entries are stored with `Cache.add_cache(response, model=..., messages=...)`,
which writes the same envelope under the same key as a completion call with those arguments does;
the response is a real ModelResponse from `llmstash.completion(..., mock_response=...)` (nothing is
sent anywhere), its answer replaced for each entry. Afterwards a sample of the entries is checked to
answer `llmstash.completion(...)` calls as cache hits with their own answers.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from typing import Any

import llmstash
from fixtures import DEAD_BASE, entries_digest, entry_prompt, entry_text, rss_bytes
from llmstash.caching import Cache
from llmstash.types import ModelResponse

MODEL = "openai/gpt-4o-mini"


def call_kwargs(i: int) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": entry_prompt(i)}], "api_base": DEAD_BASE}


def store(cache: Cache, template: ModelResponse, size: int, n: int, first: int = 0) -> float:
    started = time.perf_counter()
    for i in range(first, first + n):
        template.choices[0].message.content = entry_text(i, size)  # a distinct answer for every entry
        cache.add_cache(template, **call_kwargs(i))
    return time.perf_counter() - started


def fail(message: str) -> None:
    print(f"memory_child: {message}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--content-bytes", type=int, default=1024)
    args = parser.parse_args()
    n, size = args.entries, args.content_bytes

    llmstash.cache = None
    template = llmstash.completion(
        model=MODEL, messages=[{"role": "user", "content": "Memory bench template"}], mock_response=entry_text(0, size)
    )
    if not isinstance(template, ModelResponse):
        fail(f"the template is a {type(template).__name__}")
    warm = Cache()  # first use of the add_cache path (imports, lazily built tables), then dropped
    store(warm, template, size, 100, first=10 * n)
    if warm.stats()["writes"] != 100:
        fail(f"the warm-up entries were not stored: {warm.stats()}")
    del warm

    cache = Cache()
    gc.collect()
    before, source = rss_bytes()
    seconds = store(cache, template, size, n)
    gc.collect()
    after, _ = rss_bytes()

    held = len(cache.storage)  # type: ignore[arg-type]
    stats = cache.stats()
    if held != n or stats["writes"] != n or stats["errors"] or stats["oversized"]:
        fail(f"the cache holds {held} of the {n} entries stored: {stats}")
    stored = cache.storage.get(cache.get_cache_key(**call_kwargs(0)))
    if stored is None:
        fail("entry 0 is not stored under the key of its call")
    llmstash.cache = cache
    for i in sorted({0, 1, n // 2, n - 1, *range(0, n, max(1, n // 20))}):
        response = llmstash.completion(**call_kwargs(i))  # a miss would fail: nothing listens at DEAD_BASE
        if not response._hidden_params["cache_hit"] or response.choices[0].message.content != entry_text(i, size):
            fail(f"entry {i} did not answer its call from the cache")
    print(
        json.dumps(
            {
                "rss_before": before,
                "rss_after": after,
                "rss_source": source,
                "held": held,
                "seconds": seconds,
                "stored_bytes": len(stored),  # type: ignore[arg-type]
                "charged_bytes": getattr(cache.storage, "size_bytes", 0),
                "digest": entries_digest(n, size),
            }
        )
    )


if __name__ == "__main__":
    main()
