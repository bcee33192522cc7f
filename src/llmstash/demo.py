"""The demo: a support assistant's calls, first answered upstream, then from the cache.

``python -m llmstash demo`` starts a local OpenAI-compatible upstream (127.0.0.1, with a delay
like a real model's), caches in memory, and prints each call's outcome and latency, then the
hit rate. No server to install, no API key. ``--real`` uses the OpenAI API instead (needs
``OPENAI_API_KEY``).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import llmstash
from llmstash.caching import Cache
from llmstash.testing import MockUpstream

PASSWORD = "How do I reset my password?"
PLANS = "What plans do you offer, and how much do they cost?"
REFUND = "Can I get a refund if I cancel in the first month?"


def realistic_delay(body: dict[str, Any]) -> float:
    """About what a hosted model takes: ~0.4 s plus a little per prompt word, capped at 0.9 s."""
    text = str(body.get("messages") or body.get("input") or body.get("prompt") or "")
    return min(0.9, 0.4 + 0.01 * len(text.split()))


@dataclass
class Row:
    number: int
    call: str
    prompt: str
    outcome: str
    seconds: float
    note: str


def _ask(content: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are a concise support assistant."}, {"role": "user", "content": content}]


def _script(model: str, embed_model: str, extra: dict[str, Any]) -> list[tuple[str, str, str, Callable[[], Any]]]:
    """(call name, prompt shown, note, thunk) for each step of the demo."""

    def chat(content: str, **kw: Any) -> Callable[[], Any]:
        return lambda: llmstash.completion(model=model, messages=_ask(content), **extra, **kw)

    def achat(content: str) -> Callable[[], Any]:
        return lambda: asyncio.run(llmstash.acompletion(model=model, messages=_ask(content), **extra))

    def embed(items: list[str]) -> Callable[[], Any]:
        return lambda: llmstash.embedding(model=embed_model, input=items, **extra)

    docs = ["Resetting your password", "Plans and pricing", "Refund policy"]
    return [
        ("completion", PASSWORD, "first time: goes upstream", chat(PASSWORD)),
        ("completion", PLANS, "first time: goes upstream", chat(PLANS)),
        ("completion", PASSWORD, "same request again", chat(PASSWORD)),
        ("embedding", "3 help-center titles", "first time: goes upstream", embed(docs)),
        ("embedding", "3 help-center titles", "same batch again", embed(docs)),
        ("completion", PLANS, "temperature=0.2 is a different request", chat(PLANS, temperature=0.2)),
        ("completion", PLANS, "same as the call before", chat(PLANS, temperature=0.2)),
        ("acompletion", PASSWORD, "async calls share entries with sync ones", achat(PASSWORD)),
        ("completion", REFUND, "first time: goes upstream", chat(REFUND)),
        ("completion", PASSWORD, 'cache={"no-cache": True}: refresh the entry', chat(PASSWORD, cache={"no-cache": True})),
        ("completion", PASSWORD, "served from the refreshed entry", chat(PASSWORD)),
        ("completion", REFUND, "caching=False: bypasses the cache", chat(REFUND, caching=False)),
        ("completion", REFUND, "and the entry is still there", chat(REFUND)),
    ]


def _outcome(response: Any) -> str:
    hidden = response._hidden_params
    if hidden.get("cache_key") is None:
        return "BYPASS"
    return "HIT" if hidden.get("cache_hit") else "MISS"


def _format_seconds(seconds: float) -> str:
    if seconds >= 0.1:
        return f"{seconds * 1000:,.0f} ms"
    if seconds >= 0.001:
        return f"{seconds * 1000:.2f} ms"
    return f"{seconds * 1e6:.0f} µs"


def _table(rows: list[Row], color: bool) -> str:
    headers = ("#", "call", "prompt", "cache", "latency", "note")
    cells = [
        (
            str(r.number),
            r.call,
            r.prompt if len(r.prompt) <= 38 else r.prompt[:37] + "…",
            r.outcome,
            _format_seconds(r.seconds),
            r.note,
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    paint = {"HIT": "\033[32m", "MISS": "\033[33m", "BYPASS": "\033[36m"}

    def line(values: tuple[str, ...]) -> str:
        parts = []
        for i, value in enumerate(values):
            text = value.rjust(widths[i]) if i in (0, 4) else value.ljust(widths[i])
            if color and i == 3 and value in paint:
                text = f"{paint[value]}{text}\033[0m"
            parts.append(text)
        return "  ".join(parts).rstrip()

    rule = "  ".join("─" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(c) for c in cells)])


def run_demo(delay: float | None = None, real: bool = False) -> int:
    color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    llmstash.cache = Cache()  # in-memory, the default
    upstream: MockUpstream | None = None
    if real:
        if not os.environ.get("OPENAI_API_KEY"):
            print("--real needs OPENAI_API_KEY in the environment.", file=sys.stderr)
            return 2
        model, embed_model, extra = "gpt-4o-mini", "text-embedding-3-small", {}
        print("llmstash demo: calls go to the OpenAI API; answers are cached in memory.\n")
    else:
        upstream = MockUpstream(delay=realistic_delay if delay is None else delay).start()
        model, embed_model, extra = "openai/support-model", "openai/support-embeddings", {"api_base": upstream.base_url}
        print(f"llmstash demo: a mock OpenAI-compatible upstream on {upstream.base_url} answers like a hosted model")
        print("(about half a second a call); llmstash caches its answers in memory.\n")
    rows: list[Row] = []
    try:
        for number, (call, prompt, note, thunk) in enumerate(_script(model, embed_model, extra), start=1):
            started = time.perf_counter()
            response = thunk()
            rows.append(Row(number, call, prompt, _outcome(response), time.perf_counter() - started, note))
    finally:
        if upstream is not None:
            upstream.stop()
    print(_table(rows, color))
    _summary(rows, upstream)
    return 0


def _summary(rows: list[Row], upstream: MockUpstream | None) -> None:
    hits = [r.seconds for r in rows if r.outcome == "HIT"]
    misses = [r.seconds for r in rows if r.outcome == "MISS"]
    bypassed = [r.seconds for r in rows if r.outcome == "BYPASS"]
    print()
    print(f"calls: {len(rows)}   hits: {len(hits)}   misses: {len(misses)}   bypassed: {len(bypassed)}")
    print(f"hit rate: {len(hits) / max(1, len(hits) + len(misses)):.0%} of the calls that used the cache")
    if upstream is not None:
        print(f"upstream calls made: {upstream.call_count()} of {len(rows)}")
    if hits and misses:
        mean_miss = sum(misses) / len(misses)
        mean_hit = sum(hits) / len(hits)
        print(
            f"mean miss: {_format_seconds(mean_miss)}   mean hit: {_format_seconds(mean_hit)}   (a hit is ~{mean_miss / mean_hit:,.0f}x faster)"
        )
        print(f"time saved by the cache: ~{_format_seconds(len(hits) * mean_miss - sum(hits))}")
