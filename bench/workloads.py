"""The benchmark workloads. Add one by writing a function that returns a Measurement and
decorating it with ``@workload("name")``; run.py picks it up, and ``--only name`` selects it."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import llmstash
from common import (
    Measurement,
    active_cache,
    atime_calls,
    check,
    gc_paused,
    local_upstream,
    p50_p99_us,
    percentile,
    quietest,
    time_calls,
    workload,
)
from llmstash.caching import Cache

ROOT = Path(__file__).resolve().parent.parent
MODEL = "openai/bench"
MESSAGES = [{"role": "user", "content": "In one sentence, what is a cache?"}]

HIT_BLOCKS = 5  # hit workloads time this many blocks of calls and report the quietest block
HIT_CALLS = 4_000  # timed hits per block (~0.1 s at 20 µs)
HIT_WARMUP = 1_000
DISK_HIT_CALLS = 1_000
IMPORT_RUNS = 15
IMPORT_WARMUP = 2
MISS_ROUNDS = 200  # interleaved rounds of the miss-overhead workload ...
MISS_PER_ROUND = 10  # ... each with this many cached and this many uncached calls
MISS_WARMUP = 50


def _hit_workload(cache: Cache, calls: int, use_async: bool, target: float | None) -> Measurement:
    """Time ``calls`` identical completions against ``cache`` after one miss stored the answer."""
    with local_upstream() as upstream, active_cache(cache):
        kwargs: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "api_base": upstream.base_url}
        first = llmstash.completion(**kwargs)
        check(not first._hidden_params["cache_hit"], "the first call should have been a miss")
        hits_before = cache.stats()["hits"]

        if use_async:

            async def measure() -> list[list[int]]:
                async def call() -> object:
                    return await llmstash.acompletion(**kwargs)

                await atime_calls(call, HIT_WARMUP)
                return [await atime_calls(call, calls) for _ in range(HIT_BLOCKS)]

            blocks = asyncio.run(measure())
        else:

            def call() -> object:
                return llmstash.completion(**kwargs)

            time_calls(call, HIT_WARMUP)
            blocks = [time_calls(call, calls) for _ in range(HIT_BLOCKS)]

        last = llmstash.completion(**kwargs)
        check(last._hidden_params["cache_hit"] and last.id == first.id, "the calls were not answered from the cache")
        check(upstream.call_count() == 1, f"the upstream got {upstream.call_count()} calls; only the first should reach it")
        check(cache.stats()["hits"] - hits_before == HIT_WARMUP + HIT_BLOCKS * calls + 1, "not every timed call was a cache hit")
        check(cache.stats()["errors"] == 0, f"the cache reported errors: {cache.stats()}")
    p50, p99 = p50_p99_us(quietest(blocks))
    pooled = percentile([ns / 1000 for block in blocks for ns in block], 50)
    notes = f"quietest of {HIT_BLOCKS} blocks of {calls:,} calls; p50 over all {HIT_BLOCKS * calls:,} calls {pooled:.1f} µs"
    return Measurement(p50, p99, "µs", target=target, notes=notes)


@workload("import")
def import_time() -> Measurement:
    """`import llmstash` in a fresh interpreter (time measured inside the child process)."""
    code = "import time; t=time.perf_counter(); import llmstash; print(time.perf_counter()-t)"
    seconds = []
    with tempfile.TemporaryDirectory(prefix="llmstash-bench-pyc-") as pycache:
        # Measure with bytecode cached, as for an installed package: the warm-up runs write it to a
        # private prefix (never into src/), even where PYTHONDONTWRITEBYTECODE is set.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"PYTHONPYCACHEPREFIX": pycache}
        for i in range(IMPORT_WARMUP + IMPORT_RUNS):
            out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
            if i >= IMPORT_WARMUP:
                seconds.append(float(out.stdout.strip()))
    ms = [s * 1000 for s in seconds]
    return Measurement(
        percentile(ms, 50), percentile(ms, 99), "ms", target=150, notes=f"{IMPORT_RUNS} fresh processes, bytecode cached"
    )


@workload("sync-hit")
def sync_hit() -> Measurement:
    """`llmstash.completion(...)` answered from the in-memory cache (`Cache()`)."""
    return _hit_workload(Cache(), HIT_CALLS, use_async=False, target=25)


@workload("async-hit")
def async_hit() -> Measurement:
    """`await llmstash.acompletion(...)` answered from the in-memory cache, in one event loop."""
    return _hit_workload(Cache(), HIT_CALLS, use_async=True, target=40)


@workload("disk-hit")
def disk_hit() -> Measurement:
    """`llmstash.completion(...)` answered from the disk cache (`Cache(type="disk")`, temp dir)."""
    with tempfile.TemporaryDirectory(prefix="llmstash-bench-") as directory:
        cache = Cache(type="disk", disk_cache_dir=directory)
        try:
            return _hit_workload(cache, DISK_HIT_CALLS, use_async=False, target=None)
        finally:
            cache.close()


@workload("miss-overhead")
def miss_overhead() -> Measurement:
    """What caching adds to a miss: p50(miss that also writes) - p50(same call, `llmstash.cache = None`)."""
    cache = Cache()
    sequence = itertools.count()
    cached: list[int] = []
    uncached: list[int] = []
    with local_upstream() as upstream:

        def call() -> object:  # every call a new prompt of the same shape and length: always a miss
            messages = [{"role": "user", "content": f"Unique bench prompt {next(sequence):09d}: what is a cache?"}]
            return llmstash.completion(model=MODEL, messages=messages, api_base=upstream.base_url)

        for arm_cache in (cache, None):
            with active_cache(arm_cache):
                time_calls(call, MISS_WARMUP)
        clock = time.perf_counter_ns
        arms = [(cache, cached), (None, uncached)]
        with gc_paused():
            for round_number in range(MISS_ROUNDS):  # alternate which arm goes first, so drift hits both
                for arm_cache, samples in arms if round_number % 2 == 0 else arms[::-1]:
                    llmstash.cache = arm_cache
                    for _ in range(MISS_PER_ROUND):
                        start = clock()
                        call()
                        samples.append(clock() - start)
        llmstash.cache = None
        total = 2 * (MISS_WARMUP + MISS_ROUNDS * MISS_PER_ROUND)
        check(upstream.call_count() == total, f"the upstream got {upstream.call_count()} calls, expected {total}")
    stats = cache.stats()
    cached_calls = MISS_WARMUP + MISS_ROUNDS * MISS_PER_ROUND
    check(stats["misses"] == cached_calls and stats["writes"] == cached_calls, f"not every cached call missed and wrote: {stats}")
    check(stats["errors"] == 0, f"the cache reported errors: {stats}")

    on50, on99 = p50_p99_us(cached)
    off50, off99 = p50_p99_us(uncached)
    notes = (
        f"with cache p50 {on50:.1f} µs / p99 {on99:.1f} µs; without cache p50 {off50:.1f} µs / p99 {off99:.1f} µs; "
        f"{len(cached):,} calls each in {MISS_ROUNDS} interleaved rounds"
    )
    return Measurement(on50 - off50, None, "µs", target=100, notes=notes)
