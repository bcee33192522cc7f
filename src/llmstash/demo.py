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
import threading
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
SHIPPING = "How long does shipping to Canada take?"


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

    def stream(content: str) -> Callable[[], Any]:
        def consume() -> Any:
            chunks: Any = llmstash.completion(model=model, messages=_ask(content), stream=True, **extra)
            text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
            assert text  # the whole answer arrives, as chunks
            return chunks

        return consume

    def burst(content: str, callers: int) -> Callable[[], Any]:
        def run_together() -> list[Any]:
            answers: list[Any] = []
            threads = [threading.Thread(target=lambda: answers.append(chat(content)())) for _ in range(callers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return answers

        return run_together

    docs = ["Resetting your password", "Plans and pricing", "Refund policy"]
    return [
        ("completion", PASSWORD, "first time: goes upstream", chat(PASSWORD)),
        ("completion", PLANS, "first time: goes upstream", chat(PLANS)),
        ("completion", PASSWORD, "same request again", chat(PASSWORD)),
        ("embedding", "3 help-center titles", "first time: goes upstream", embed(docs)),
        ("embedding", "3 help-center titles", "same batch again", embed(docs)),
        ("embedding", "4 titles, 3 of them cached", "only the new title goes upstream", embed([*docs, "Shipping times"])),
        ("completion", PLANS, "temperature=0.2 is a different request", chat(PLANS, temperature=0.2)),
        ("completion", PLANS, "same as the call before", chat(PLANS, temperature=0.2)),
        ("acompletion", PASSWORD, "async calls share entries with sync ones", achat(PASSWORD)),
        ("completion", REFUND, "first time: goes upstream", chat(REFUND)),
        ("completion", PASSWORD, 'cache={"no-cache": True}: refresh the entry', chat(PASSWORD, cache={"no-cache": True})),
        ("completion", PASSWORD, "served from the refreshed entry", chat(PASSWORD)),
        ("completion", PASSWORD, "stream=True: the cached answer replayed as chunks", stream(PASSWORD)),
        ("completion x8", SHIPPING, "8 threads ask at once: one upstream call", burst(SHIPPING, 8)),
        ("completion", REFUND, "caching=False: bypasses the cache", chat(REFUND, caching=False)),
        ("completion", REFUND, "and the entry is still there", chat(REFUND)),
    ]


def _outcome(response: Any) -> str:
    if isinstance(response, list):  # a burst of identical calls
        waited = sum(bool(r._hidden_params["cache_hit"]) for r in response)
        return f"1 MISS, {waited} WAITED" if waited == len(response) - 1 else f"{len(response) - waited} MISSES"
    hidden = response._hidden_params
    if "total_items" in hidden:  # an embedding batch, item by item
        cached, total = hidden["cached_items"], hidden["total_items"]
        return "HIT" if cached == total else "MISS" if cached == 0 else f"{cached}/{total} HIT"
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
    paint_of = {value: code for value in {c[3] for c in cells} for word, code in paint.items() if word in value}

    def line(values: tuple[str, ...]) -> str:
        parts = []
        for i, value in enumerate(values):
            text = value.rjust(widths[i]) if i in (0, 4) else value.ljust(widths[i])
            if color and i == 3 and value in paint_of:
                text = f"{paint_of[value]}{text}\033[0m"
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
    calls = 0
    try:
        for number, (call, prompt, note, thunk) in enumerate(_script(model, embed_model, extra), start=1):
            started = time.perf_counter()
            response = thunk()
            rows.append(Row(number, call, prompt, _outcome(response), time.perf_counter() - started, note))
            calls += len(response) if isinstance(response, list) else 1
    finally:
        if upstream is not None:
            upstream.stop()
    print(_table(rows, color))
    _summary(rows, calls, upstream)
    return 0


def _summary(rows: list[Row], calls: int, upstream: MockUpstream | None) -> None:
    hits = [r.seconds for r in rows if r.outcome == "HIT"]
    misses = [r.seconds for r in rows if r.outcome == "MISS"]
    stats = llmstash.cache.stats() if llmstash.cache is not None else {}
    print()
    made = f"   upstream calls made: {upstream.call_count()}" if upstream is not None else ""
    print(f"steps: {len(rows)}   calls: {calls}{made}")
    print(
        f"cache reads: {stats.get('hits', 0)} hits, {stats.get('misses', 0)} misses "
        f"({stats.get('coalesced', 0)} of them answered by an identical call in flight); "
        f"hit rate {stats.get('hit_rate', 0.0):.0%}"
    )
    if hits and misses:
        mean_miss = sum(misses) / len(misses)
        mean_hit = sum(hits) / len(hits)
        print(
            f"mean miss: {_format_seconds(mean_miss)}   mean hit: {_format_seconds(mean_hit)}   (a hit is ~{mean_miss / mean_hit:,.0f}x faster)"
        )
        print(f"time saved by the cache: ~{_format_seconds(len(hits) * mean_miss - sum(hits))}")
