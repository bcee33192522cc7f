"""What the proxy counts, for ``/metrics`` (Prometheus text format) and the status page.

Per worker process: requests by route, model and outcome (hit or miss), request and upstream
latency histograms, upstream errors, tokens, dollars and upstream seconds saved by hits, a
timeline of hits and misses in 10-second buckets (the last hour), and the slowest upstream calls
that hits have avoided (each key's miss latency is remembered for the last 10,000 keys). The
cache's own counters (``Cache.stats()``) are exported per backend. Nothing here holds a prompt,
an answer or a key: cache keys appear only as short hashes.
"""

from __future__ import annotations

import bisect
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from llmstash._core.keys import digest
from llmstash.proxy.config import Price

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TIMELINE_SECONDS = 10
TIMELINE_LENGTH = 360
REMEMBERED_MISSES = 10_000
CACHE_COUNTERS = ("hits", "misses", "writes", "errors", "corrupt", "oversized", "coalesced")


class Histogram:
    __slots__ = ("counts", "sums")

    def __init__(self) -> None:
        self.counts: dict[tuple[str, ...], list[int]] = {}
        self.sums: dict[tuple[str, ...], float] = {}

    def observe(self, labels: tuple[str, ...], seconds: float) -> None:
        counts = self.counts.get(labels)
        if counts is None:
            counts = self.counts[labels] = [0] * (len(BUCKETS) + 1)
            self.sums[labels] = 0.0
        counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sums[labels] += seconds


@dataclass(slots=True)
class Miss:
    """What one upstream call cost, remembered so that later hits on its key can be credited."""

    route: str
    model: str
    seconds: float
    hits: int = 0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: Iterable[str], values: Iterable[str]) -> str:
    return ",".join(f'{name}="{_escape(value)}"' for name, value in zip(names, values, strict=True))


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


class Metrics:
    """Counters of one worker (asyncio: one thread touches them, no lock needed)."""

    def __init__(self, prices: dict[str, Price] | None = None, clock: Any = time.time) -> None:
        self.prices = prices or {}
        self.clock = clock
        self.started = clock()
        self.requests: dict[tuple[str, str, str], int] = {}
        self.errors: dict[tuple[str, str, str], int] = {}
        self.tokens_saved: dict[str, int] = {}
        self.dollars_saved: dict[str, float] = {}
        self.seconds_saved: dict[str, float] = {}
        self.latency = Histogram()
        self.upstream_latency = Histogram()
        self.timeline: deque[list[int]] = deque(maxlen=TIMELINE_LENGTH)
        self.misses: OrderedDict[str, Miss] = OrderedDict()

    # ----- recording -------------------------------------------------------------------------------

    def _tick(self, hit: bool) -> None:
        bucket = int(self.clock()) // TIMELINE_SECONDS * TIMELINE_SECONDS
        if not self.timeline or self.timeline[-1][0] != bucket:
            self.timeline.append([bucket, 0, 0])
        self.timeline[-1][1 if hit else 2] += 1

    def request(self, route: str, model: str, hit: bool, seconds: float, key: str | None, usage: Any) -> None:
        """One answered request: a hit (from the cache) or a miss (upstream)."""
        outcome = "hit" if hit else "miss"
        labels = (route, model, outcome)
        self.requests[labels] = self.requests.get(labels, 0) + 1
        self.latency.observe((route, outcome), seconds)
        self._tick(hit)
        if not hit:
            self.upstream_latency.observe((route, model), seconds)
            if key is not None:
                self.misses[key] = Miss(route, model, seconds)
                self.misses.move_to_end(key)
                if len(self.misses) > REMEMBERED_MISSES:
                    self.misses.popitem(last=False)
            return
        if isinstance(usage, dict):
            prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
            total = usage.get("total_tokens") or (prompt + completion)
            if isinstance(total, int) and total > 0:
                self.tokens_saved[model] = self.tokens_saved.get(model, 0) + total
                price = self.prices.get(model)
                if price is not None and isinstance(prompt, int) and isinstance(completion, int):
                    dollars = prompt * price.input + completion * price.output
                    self.dollars_saved[model] = self.dollars_saved.get(model, 0.0) + dollars
        miss = self.misses.get(key) if key is not None else None
        if miss is not None:
            miss.hits += 1
            self.seconds_saved[model] = self.seconds_saved.get(model, 0.0) + miss.seconds

    def error(self, route: str, model: str, status: int) -> None:
        labels = (route, model, str(status))
        self.errors[labels] = self.errors.get(labels, 0) + 1

    # ----- reading ---------------------------------------------------------------------------------

    def totals(self) -> dict[str, Any]:
        hits = sum(count for (_, _, outcome), count in self.requests.items() if outcome == "hit")
        misses = sum(count for (_, _, outcome), count in self.requests.items() if outcome == "miss")
        return {
            "requests": hits + misses,
            "hits": hits,
            "misses": misses,
            "hit_rate": hits / (hits + misses) if hits + misses else 0.0,
            "errors": sum(self.errors.values()),
            "tokens_saved": sum(self.tokens_saved.values()),
            "dollars_saved": round(sum(self.dollars_saved.values()), 6),
            "seconds_saved": round(sum(self.seconds_saved.values()), 3),
            "uptime_seconds": round(self.clock() - self.started, 1),
        }

    def models(self) -> list[dict[str, Any]]:
        rows: dict[str, dict[str, Any]] = {}
        for (_, model, outcome), count in self.requests.items():
            row = rows.setdefault(model, {"model": model, "hits": 0, "misses": 0})
            row["hits" if outcome == "hit" else "misses"] += count
        for model, row in rows.items():
            row["requests"] = row["hits"] + row["misses"]
            row["hit_rate"] = row["hits"] / row["requests"] if row["requests"] else 0.0
            row["tokens_saved"] = self.tokens_saved.get(model, 0)
            row["dollars_saved"] = round(self.dollars_saved.get(model, 0.0), 6)
            row["seconds_saved"] = round(self.seconds_saved.get(model, 0.0), 3)
        return sorted(rows.values(), key=lambda row: -row["requests"])

    def slowest_avoided(self, limit: int = 10) -> list[dict[str, Any]]:
        """Upstream calls that hits answered instead, slowest first (keys as short hashes)."""
        avoided = [(key, miss) for key, miss in self.misses.items() if miss.hits]
        avoided.sort(key=lambda item: -item[1].seconds)
        return [
            {
                "key_hash": digest(key)[:12],
                "route": miss.route,
                "model": miss.model,
                "upstream_ms": round(miss.seconds * 1000, 1),
                "hits": miss.hits,
                "saved_seconds": round(miss.seconds * miss.hits, 3),
            }
            for key, miss in avoided[:limit]
        ]

    def timeline_points(self) -> list[dict[str, int]]:
        return [{"t": bucket, "hits": hits, "misses": misses} for bucket, hits, misses in self.timeline]

    def prometheus(self, backend: str | None, cache_stats: dict[str, Any] | None, entries: int | None) -> str:
        """Everything in the Prometheus text exposition format (version 0.0.4)."""
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")

        family("llmstash_proxy_requests_total", "counter", "Requests answered, by route, model and cache outcome.")
        for request_labels, count in sorted(self.requests.items()):
            lines.append(f"llmstash_proxy_requests_total{{{_labels(('route', 'model', 'cache'), request_labels)}}} {count}")
        family("llmstash_proxy_upstream_errors_total", "counter", "Requests that failed upstream, by route, model and status.")
        for error_labels, count in sorted(self.errors.items()):
            lines.append(f"llmstash_proxy_upstream_errors_total{{{_labels(('route', 'model', 'status'), error_labels)}}} {count}")
        for name, values, help_text in (
            ("llmstash_proxy_tokens_saved_total", self.tokens_saved, "Tokens of the answers served from the cache."),
            (
                "llmstash_proxy_dollars_saved_total",
                self.dollars_saved,
                "Dollars the answers served from the cache would have cost.",
            ),
            ("llmstash_proxy_upstream_seconds_saved_total", self.seconds_saved, "Upstream seconds avoided by hits."),
        ):
            family(name, "counter", help_text)
            for model, value in sorted(values.items()):
                lines.append(f"{name}{{{_labels(('model',), (model,))}}} {_number(value)}")
        for name, histogram, label_names, help_text in (
            ("llmstash_proxy_request_duration_seconds", self.latency, ("route", "cache"), "Time to answer a request."),
            ("llmstash_proxy_upstream_duration_seconds", self.upstream_latency, ("route", "model"), "Time to answer a miss."),
        ):
            family(name, "histogram", help_text)
            for labels, counts in sorted(histogram.counts.items()):
                base = _labels(label_names, labels)
                cumulative = 0
                for bound, count in zip((*BUCKETS, None), counts, strict=True):
                    cumulative += count
                    le = "+Inf" if bound is None else repr(bound)
                    lines.append(f'{name}_bucket{{{base},le="{le}"}} {cumulative}')
                lines.append(f"{name}_sum{{{base}}} {_number(histogram.sums[labels])}")
                lines.append(f"{name}_count{{{base}}} {cumulative}")
        if backend is not None and cache_stats is not None:
            label = _labels(("backend",), (backend,))
            for counter in CACHE_COUNTERS:
                name = f"llmstash_cache_{counter}_total"
                family(name, "counter", f"Cache {counter} since the worker started, by backend.")
                lines.append(f"{name}{{{label}}} {cache_stats.get(counter, 0)}")
            family("llmstash_cache_hit_rate", "gauge", "Share of cache reads answered without an upstream call.")
            lines.append(f"llmstash_cache_hit_rate{{{label}}} {_number(float(cache_stats.get('hit_rate', 0.0)))}")
            if entries is not None:
                family(
                    "llmstash_cache_entries",
                    "gauge",
                    "Entries in the cache (recounted every 15 s, or 60 s where keys must be listed).",
                )
                lines.append(f"llmstash_cache_entries{{{label}}} {entries}")
        family("llmstash_proxy_uptime_seconds", "gauge", "Seconds since this worker started.")
        lines.append(f"llmstash_proxy_uptime_seconds {_number(round(self.clock() - self.started, 3))}")
        return "\n".join(lines) + "\n"
