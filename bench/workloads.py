"""The benchmark workloads. Add one by writing a function that returns a Measurement and
decorating it with ``@workload("name")``; run.py picks it up, and ``--only name`` selects it."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

import llmstash
from common import (
    BenchError,
    Measurement,
    TwinResult,
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
from fixtures import big_prompt, entries_digest, text_sha256
from llmstash.caching import Cache
from llmstash.testing.servers import ValkeyServer
from llmstash.testing.upstream import MockUpstream, reply_text, vector_for
from twin import Twin, spread

ROOT = Path(__file__).resolve().parent.parent
# A model LiteLLM has a price for: LiteLLM looks up the price of every answer, cached or not, and an
# unknown name (say "openai/bench") sends it down a slow fallback path on each call (the sync-hit
# notes give that figure). llmstash does no price look-up; the name is only part of its cache key.
MODEL = "openai/gpt-4o-mini"
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
MISS_CHUNKS = 5  # the rounds run in this many chunks, with a LiteLLM block after each

# LiteLLM's side (bench/litellm_runner.py), smaller: its calls take ~100 times as long as llmstash's
LITELLM_HIT_CALLS = 500  # timed hits per block; HIT_BLOCKS (REDIS_BLOCKS for redis-hit) blocks
LITELLM_HIT_WARMUP = 200
LITELLM_IMPORT_RUNS = 7  # fresh processes of ~2.5 s each, spread among llmstash's IMPORT_RUNS
LITELLM_MISS_ROUNDS = 8  # interleaved rounds per block (MISS_CHUNKS blocks) ...
LITELLM_MISS_PER_ROUND = 10  # ... each with this many cached and this many uncached calls
LITELLM_MISS_WARMUP = 20

BIG_PROMPT_CHARS = 100 * 1024  # hit-100kb-prompt: one user message of this many characters
BIG_HIT_CALLS = 1_000  # timed hits per block (~0.15 s at 150 µs: the key hashes the whole message)
BIG_HIT_WARMUP = 200
LITELLM_BIG_HIT_CALLS = 100  # ~4 ms each
LITELLM_BIG_HIT_WARMUP = 30
LITELLM_DISK_HIT_CALLS = 150  # ~2.5 ms each
LITELLM_DISK_HIT_WARMUP = 100

THROUGHPUT_TASKS = 200  # async-hits-per-second: identical calls gathered per round ...
THROUGHPUT_ROUNDS = 40  # ... rounds per block (HIT_BLOCKS blocks; ~5 ms a round) ...
THROUGHPUT_WARMUP = 10  # ... after this many warm-up rounds
LITELLM_THROUGHPUT_ROUNDS = 3  # ~0.5 s a round
LITELLM_THROUGHPUT_WARMUP = 1

LITELLM_STREAM_CALLS = 40  # stream-hit: LiteLLM's replays per block (~15 ms each)
LITELLM_STREAM_WARMUP = 10

MEMORY_ENTRIES = 100_000  # memory-per-entry: cached completions stored ...
MEMORY_CONTENT = 1_024  # ... each answering with this many characters


def _twin_timed(blocks: list[list[int]], unit: str, notes: str) -> TwinResult:
    """LiteLLM's result for a timed workload: the quietest block, as for llmstash."""
    check(len(blocks) > 0, "LiteLLM ran no block")
    p50, p99 = p50_p99_us(quietest(blocks))
    scale = 1000 if unit == "ms" else 1
    return TwinResult("ok", p50 / scale, p99 / scale, unit, notes=notes)


@dataclass(frozen=True)
class HitOptions:
    """How ``_hit_workload`` runs: the llmstash side's warm-up and messages, and the LiteLLM twin's
    block size, warm-up, extra runner parameters and what its note says it used."""

    messages: list[dict[str, str]] = field(default_factory=lambda: MESSAGES)
    warmup: int = HIT_WARMUP
    litellm_calls: int = LITELLM_HIT_CALLS
    litellm_warmup: int = LITELLM_HIT_WARMUP
    twin_params: dict[str, Any] = field(default_factory=dict)
    litellm_what: str = ""
    """What LiteLLM ran, for its note (e.g. its cache's type)."""


def _hit_workload(
    cache: Cache,
    calls: int,
    use_async: bool,
    target: float | None,
    twin_name: str | None = None,
    options: HitOptions | None = None,
) -> Measurement:
    """Time ``calls`` identical completions against ``cache`` after one miss stored the answer;
    with ``twin_name``, LiteLLM's twin runs a block of its own after each of llmstash's."""
    opts = options or HitOptions()
    with local_upstream() as upstream, local_upstream() as litellm_upstream, active_cache(cache):
        kwargs: dict[str, Any] = {"model": MODEL, "messages": opts.messages, "api_base": upstream.base_url}
        first = llmstash.completion(**kwargs)
        check(not first._hidden_params["cache_hit"], "the first call should have been a miss")
        hits_before = cache.stats()["hits"]
        twin_params = {"base_url": litellm_upstream.base_url, "model": MODEL, "calls": opts.litellm_calls}
        twin_params |= {"warmup": opts.litellm_warmup, "unknown_model_block": twin_name == "sync-hit", **opts.twin_params}
        litellm_blocks: list[list[int]] = []
        disk_hits: list[int] = []

        with Twin(twin_name, **twin_params) as twin:
            prompt = opts.messages[0]["content"]
            if twin.ready is not None and twin.ready.get("prompt_sha256") != text_sha256(prompt):
                twin.fail(f"LiteLLM's prompt ({twin.ready.get('prompt_chars')} characters) is not llmstash's ({len(prompt)})")
            litellm_calls_at_ready = litellm_upstream.call_count()

            def litellm_block() -> None:
                block = twin.block()
                if block is not None:
                    litellm_blocks.append(block["samples_ns"])
                    if "disk_hits" in block:
                        disk_hits.append(block["disk_hits"])

            if use_async:

                async def measure() -> list[list[int]]:
                    async def call() -> object:
                        return await llmstash.acompletion(**kwargs)

                    await atime_calls(call, opts.warmup)
                    timed = []
                    for _ in range(HIT_BLOCKS):
                        timed.append(await atime_calls(call, calls))
                        litellm_block()  # blocks this loop while LiteLLM's runs: nothing else is scheduled
                    return timed

                blocks = asyncio.run(measure())
            else:

                def call() -> object:
                    return llmstash.completion(**kwargs)

                time_calls(call, opts.warmup)
                blocks = []
                for _ in range(HIT_BLOCKS):
                    blocks.append(time_calls(call, calls))
                    litellm_block()

            litellm_timed_calls = litellm_upstream.call_count() - litellm_calls_at_ready
            final = twin.finish()

            def litellm_result() -> TwinResult:
                check(litellm_timed_calls == 0, f"{litellm_timed_calls} of LiteLLM's timed calls reached the upstream")
                n = opts.litellm_calls
                pooled = percentile([ns / 1000 for block in litellm_blocks for ns in block], 50)
                notes = (
                    f"{opts.litellm_what}quietest of {len(litellm_blocks)} blocks of {n:,} calls, each block run right after "
                    f"one of llmstash's; p50 over all {len(litellm_blocks) * n:,} calls {pooled:,.1f} µs; every timed "
                    "call came back with `cache_hit` True and the first answer's id, and none reached the upstream"
                )
                if disk_hits:
                    notes += f"; diskcache's own hit counter rose by {', '.join(map(str, disk_hits))} in its blocks (every hit read the disk)"
                if final and "unknown_model" in final:
                    unknown = final["unknown_model"]
                    notes += (
                        f"; with model `{unknown['model']}` (not in LiteLLM's cost map) its p50 is {unknown['p50_us']:,.1f} µs"
                    )
                return _twin_timed(litellm_blocks, "µs", notes)

            litellm = twin.outcome(litellm_result)

        last = llmstash.completion(**kwargs)
        check(last._hidden_params["cache_hit"] and last.id == first.id, "the calls were not answered from the cache")
        check(upstream.call_count() == 1, f"the upstream got {upstream.call_count()} calls; only the first should reach it")
        sent = upstream.calls[0].body["messages"]
        check(sent == opts.messages, "the upstream did not get the workload's messages")
        check(cache.stats()["hits"] - hits_before == opts.warmup + HIT_BLOCKS * calls + 1, "not every timed call was a cache hit")
        check(cache.stats()["errors"] == 0, f"the cache reported errors: {cache.stats()}")
    p50, p99 = p50_p99_us(quietest(blocks))
    pooled = percentile([ns / 1000 for block in blocks for ns in block], 50)
    notes = f"quietest of {HIT_BLOCKS} blocks of {calls:,} calls; p50 over all {HIT_BLOCKS * calls:,} calls {pooled:.1f} µs"
    return Measurement(p50, p99, "µs", target=target, notes=notes, litellm=litellm)


@workload("import", twin=True)
def import_time() -> Measurement:
    """`import llmstash` in a fresh interpreter (time measured inside the child process)."""
    code = "import time; t=time.perf_counter(); import llmstash; print(time.perf_counter()-t)"
    seconds = []
    litellm_ns: list[int] = []
    litellm_after = spread(IMPORT_RUNS, LITELLM_IMPORT_RUNS)
    with tempfile.TemporaryDirectory(prefix="llmstash-bench-pyc-") as pycache, Twin("import", warmup=IMPORT_WARMUP) as twin:
        # Measure with bytecode cached, as for an installed package: the warm-up runs write it to a
        # private prefix (never into src/), even where PYTHONDONTWRITEBYTECODE is set.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"PYTHONPYCACHEPREFIX": pycache}
        for i in range(IMPORT_WARMUP + IMPORT_RUNS):
            out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
            if i >= IMPORT_WARMUP:
                seconds.append(float(out.stdout.strip()))
                if i - IMPORT_WARMUP in litellm_after and (block := twin.block()) is not None:
                    litellm_ns += block["samples_ns"]
        twin.finish()

        def litellm_result() -> TwinResult:
            check(len(litellm_ns) == LITELLM_IMPORT_RUNS, f"LiteLLM ran {len(litellm_ns)} of {LITELLM_IMPORT_RUNS} imports")
            ms = [ns / 1e6 for ns in litellm_ns]
            notes = f"{LITELLM_IMPORT_RUNS} fresh processes, spread among llmstash's, bytecode cached"
            return TwinResult("ok", percentile(ms, 50), percentile(ms, 99), "ms", notes=notes)

        litellm = twin.outcome(litellm_result)
    ms = [s * 1000 for s in seconds]
    p50 = percentile(ms, 50)
    notes = f"{IMPORT_RUNS} fresh processes, bytecode cached"
    return Measurement(p50, percentile(ms, 99), "ms", target=150, notes=notes, litellm=litellm)


@workload("sync-hit", twin=True)
def sync_hit() -> Measurement:
    """`llmstash.completion(...)` answered from the in-memory cache (`Cache()`); LiteLLM: `litellm.completion(..., caching=True)` with `litellm.cache = litellm.Cache()`."""
    return _hit_workload(Cache(), HIT_CALLS, use_async=False, target=25, twin_name="sync-hit")


@workload("async-hit", twin=True)
def async_hit() -> Measurement:
    """`await llmstash.acompletion(...)` answered from the in-memory cache, in one event loop; LiteLLM: `await litellm.acompletion(...)` likewise."""
    return _hit_workload(Cache(), HIT_CALLS, use_async=True, target=40, twin_name="async-hit")


@workload("hit-100kb-prompt", twin=True)
def hit_100kb_prompt() -> Measurement:
    """`llmstash.completion(...)` answered from the in-memory cache, the prompt one user message of 102,400 characters of text; LiteLLM: `litellm.completion(..., caching=True)` with `litellm.cache = litellm.Cache()`, the same message."""
    messages = [{"role": "user", "content": big_prompt(BIG_PROMPT_CHARS)}]
    options = HitOptions(
        messages=messages,
        warmup=BIG_HIT_WARMUP,
        litellm_calls=LITELLM_BIG_HIT_CALLS,
        litellm_warmup=LITELLM_BIG_HIT_WARMUP,
        twin_params={"prompt_bytes": BIG_PROMPT_CHARS},
        litellm_what=f"the same {BIG_PROMPT_CHARS:,}-character message (SHA-256 compared); ",
    )
    measured = _hit_workload(Cache(), BIG_HIT_CALLS, use_async=False, target=None, twin_name="hit-100kb-prompt", options=options)
    return dataclasses.replace(measured, notes=f"a {BIG_PROMPT_CHARS:,}-character user message; {measured.notes}")


def _hits_per_second(round_ns: list[int], tasks: int) -> tuple[float, float]:
    """Hits/s at the median and at the p99 round time (the slow tail) of rounds of ``tasks`` hits."""
    return tasks / (percentile(round_ns, 50) / 1e9), tasks / (percentile(round_ns, 99) / 1e9)


@workload("async-hits-per-second", twin=True)
def async_hits_per_second() -> Measurement:
    """Cache hits per second (higher is better) in rounds of `asyncio.gather` of 200 identical `llmstash.acompletion(...)` calls in one event loop, answered from the in-memory cache; LiteLLM: the same 200 `litellm.acompletion(..., caching=True)` calls with `litellm.cache = litellm.Cache()`."""
    cache = Cache()
    clock = time.perf_counter_ns
    litellm_blocks: list[list[int]] = []
    with local_upstream() as upstream, local_upstream() as litellm_upstream, active_cache(cache):
        kwargs: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "api_base": upstream.base_url}
        twin_params = {"base_url": litellm_upstream.base_url, "model": MODEL, "tasks": THROUGHPUT_TASKS}
        twin_params |= {"rounds": LITELLM_THROUGHPUT_ROUNDS, "warmup": LITELLM_THROUGHPUT_WARMUP}
        with Twin("async-hits-per-second", **twin_params) as twin:
            litellm_calls_at_ready = litellm_upstream.call_count()

            async def measure() -> list[list[int]]:
                first = await llmstash.acompletion(**kwargs)
                check(not first._hidden_params["cache_hit"], "the first call should have been a miss")
                hits_before = cache.stats()["hits"]

                async def rounds(n: int) -> list[int]:
                    samples = [0] * n
                    with gc_paused():
                        for i in range(n):
                            start = clock()
                            results = await asyncio.gather(*(llmstash.acompletion(**kwargs) for _ in range(THROUGHPUT_TASKS)))
                            samples[i] = clock() - start
                            bad = [r for r in results if not r._hidden_params["cache_hit"] or r.id != first.id]
                            check(not bad, f"{len(bad)} of a round's {THROUGHPUT_TASKS} calls were not hits on the stored answer")
                    return samples

                await rounds(THROUGHPUT_WARMUP)
                blocks = []
                for _ in range(HIT_BLOCKS):
                    blocks.append(await rounds(THROUGHPUT_ROUNDS))
                    if (block := twin.block()) is not None:  # blocks this loop while LiteLLM's runs
                        litellm_blocks.append(block["round_ns"])
                hits = cache.stats()["hits"] - hits_before
                expected = THROUGHPUT_TASKS * (THROUGHPUT_WARMUP + HIT_BLOCKS * THROUGHPUT_ROUNDS)
                check(hits == expected, f"the cache counted {hits} hits, expected {expected}")
                return blocks

            blocks = asyncio.run(measure())
            litellm_timed_calls = litellm_upstream.call_count() - litellm_calls_at_ready
            twin.finish()

            def litellm_result() -> TwinResult:
                check(litellm_timed_calls == 0, f"{litellm_timed_calls} of LiteLLM's timed calls reached the upstream")
                check(len(litellm_blocks) == HIT_BLOCKS, f"LiteLLM ran {len(litellm_blocks)} of {HIT_BLOCKS} blocks")
                p50, p99 = _hits_per_second(quietest(litellm_blocks), THROUGHPUT_TASKS)
                pooled, _ = _hits_per_second([ns for block in litellm_blocks for ns in block], THROUGHPUT_TASKS)
                rounds = len(litellm_blocks) * LITELLM_THROUGHPUT_ROUNDS
                notes = (
                    f"quietest of {len(litellm_blocks)} blocks of {LITELLM_THROUGHPUT_ROUNDS} rounds of {THROUGHPUT_TASKS} "
                    f"calls, each block run right after one of llmstash's; over all {rounds} rounds {pooled:,.0f} hits/s; every "
                    "call came back with `cache_hit` True and the first answer's id, and none reached the upstream"
                )
                return TwinResult("ok", p50, p99, "hits/s", digits=0, notes=notes)

            litellm = twin.outcome(litellm_result)
        check(upstream.call_count() == 1, f"the upstream got {upstream.call_count()} calls; only the first should reach it")
        check(cache.stats()["errors"] == 0, f"the cache reported errors: {cache.stats()}")
    p50, p99 = _hits_per_second(quietest(blocks), THROUGHPUT_TASKS)
    pooled, _ = _hits_per_second([ns for block in blocks for ns in block], THROUGHPUT_TASKS)
    round_us = percentile(quietest(blocks), 50) / 1000
    notes = (
        f"quietest of {HIT_BLOCKS} blocks of {THROUGHPUT_ROUNDS} rounds, each round one `asyncio.gather` of "
        f"{THROUGHPUT_TASKS} calls timed whole (median round {round_us:,.0f} µs); over all "
        f"{HIT_BLOCKS * THROUGHPUT_ROUNDS} rounds {pooled:,.0f} hits/s; the p99 column is the rate at the p99 round time"
    )
    return Measurement(p50, p99, "hits/s", notes=notes, digits=0, litellm=litellm, higher_is_better=True)


@workload("disk-hit", twin=True)
def disk_hit() -> Measurement:
    """`llmstash.completion(...)` answered from the disk cache (`Cache(type="disk")`, temp dir); LiteLLM: `litellm.Cache(type="disk", disk_cache_dir=<temp dir>)` (diskcache)."""
    options = HitOptions(
        litellm_calls=LITELLM_DISK_HIT_CALLS,
        litellm_warmup=LITELLM_DISK_HIT_WARMUP,
        litellm_what='`litellm.Cache(type="disk", disk_cache_dir=<a temporary directory>)`, on diskcache; ',
    )
    with tempfile.TemporaryDirectory(prefix="llmstash-bench-") as directory:
        cache = Cache(type="disk", disk_cache_dir=directory)
        try:
            return _hit_workload(cache, DISK_HIT_CALLS, use_async=False, target=None, twin_name="disk-hit", options=options)
        finally:
            cache.close()


@workload("miss-overhead", twin=True)
def miss_overhead() -> Measurement:
    """What caching adds to a miss: p50(miss that also writes) - p50(same call, `llmstash.cache = None`); LiteLLM: the same with `litellm.cache = litellm.Cache()` and `= None`."""
    cache = Cache()
    sequence = itertools.count()
    cached: list[int] = []
    uncached: list[int] = []
    litellm_samples: dict[str, list[int]] = {"cached": [], "uncached": []}
    with local_upstream() as upstream, local_upstream() as litellm_upstream:
        twin_params = {"base_url": litellm_upstream.base_url, "model": MODEL, "warmup": LITELLM_MISS_WARMUP}
        twin_params |= {"rounds": LITELLM_MISS_ROUNDS, "per_round": LITELLM_MISS_PER_ROUND}
        with Twin("miss-overhead", **twin_params) as twin:

            def call() -> object:  # every call a new prompt of the same shape and length: always a miss
                messages = [{"role": "user", "content": f"Unique bench prompt {next(sequence):09d}: what is a cache?"}]
                return llmstash.completion(model=MODEL, messages=messages, api_base=upstream.base_url)

            for arm_cache in (cache, None):
                with active_cache(arm_cache):
                    time_calls(call, MISS_WARMUP)
            clock = time.perf_counter_ns
            arms = [(cache, cached), (None, uncached)]
            for chunk in range(MISS_CHUNKS):
                with gc_paused():
                    for round_number in range(chunk * MISS_ROUNDS // MISS_CHUNKS, (chunk + 1) * MISS_ROUNDS // MISS_CHUNKS):
                        for arm_cache, samples in arms if round_number % 2 == 0 else arms[::-1]:  # drift hits both arms
                            llmstash.cache = arm_cache
                            for _ in range(MISS_PER_ROUND):
                                start = clock()
                                call()
                                samples.append(clock() - start)
                    llmstash.cache = None
                if (block := twin.block()) is not None:  # LiteLLM's rounds, between llmstash's
                    for arm in litellm_samples:
                        litellm_samples[arm] += block[arm]
            final = twin.finish()

            def litellm_result() -> TwinResult:
                assert final is not None
                made = litellm_upstream.call_count()
                check(made == final["upstream_calls"], f"LiteLLM made {final['upstream_calls']} calls, the upstream got {made}")
                on50, on99 = p50_p99_us(litellm_samples["cached"])
                off50, off99 = p50_p99_us(litellm_samples["uncached"])
                notes = (
                    f"with cache p50 {on50:,.1f} µs / p99 {on99:,.1f} µs; without cache p50 {off50:,.1f} µs / p99 {off99:,.1f} µs; "
                    f"{len(litellm_samples['cached']):,} calls each in {MISS_CHUNKS * LITELLM_MISS_ROUNDS} interleaved rounds, "
                    f"run in {MISS_CHUNKS} blocks between llmstash's; every call went to the upstream, and the last cached-arm "
                    "answer was then a cache hit"
                )
                return TwinResult("ok", on50 - off50, None, "µs", notes=notes)

            litellm = twin.outcome(litellm_result)
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
    return Measurement(on50 - off50, None, "µs", target=100, notes=notes, litellm=litellm)


# ----- concurrency: single flight ---------------------------------------------------------------

BURST = 100  # identical calls started together ...
BURST_ROUNDS = 5  # ... in this many bursts (plus one warm-up burst), each with a fresh prompt
BURST_DELAY = 0.2  # seconds the upstream takes: every caller of a burst arrives while the first is in flight


def _burst_upstream() -> MockUpstream:
    """MockUpstream(delay=BURST_DELAY); its listen backlog (128) holds a whole burst."""
    return MockUpstream(delay=BURST_DELAY)


def _burst_prompt(label: str, number: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Concurrent {label} bench prompt {number:04d}: what is a cache?"}]


def _check_burst(
    label: str,
    number: int,
    upstream: MockUpstream,
    cache: Cache,
    before: tuple[int, dict[str, Any]],
    results: list[Any],
    seen_ids: set[str],
) -> int:
    """Check one burst's answers and counters; return how many upstream calls it made."""
    calls_before, stats_before = before
    errors = [r for r in results if isinstance(r, BaseException)]
    check(not errors, f"{len(errors)} of {BURST} callers failed, first: {errors[:1]!r}")
    check(len(results) == BURST, f"{len(results)} of {BURST} callers answered")
    calls = upstream.call_count() - calls_before
    stats = cache.stats()
    delta = {name: stats[name] - stats_before[name] for name in ("hits", "misses", "coalesced", "writes", "errors")}
    # every caller must have missed the storage: one that found the answer stored arrived too late to be concurrent
    check(delta["hits"] == 0 and delta["misses"] == BURST, f"burst {number}: not {BURST} concurrent misses: {delta}")
    check(delta["errors"] == 0, f"burst {number}: the cache reported errors: {delta}")
    check(calls >= 1 and delta["coalesced"] == BURST - calls, f"burst {number}: {calls} upstream calls but {delta}")
    expected = reply_text(_burst_prompt(label, number)[0]["content"])
    check(all(r.choices[0].message.content == expected for r in results), f"burst {number}: a caller got another prompt's answer")
    leaders = sum(not r._hidden_params["cache_hit"] for r in results)
    check(
        leaders == calls, f"burst {number}: {leaders} callers were answered by their own upstream call, the upstream got {calls}"
    )
    ids = {r.id for r in results}
    check(len(ids) <= calls, f"burst {number}: callers got {len(ids)} different response ids from {calls} upstream calls")
    check(not ids & seen_ids, f"burst {number}: a caller got an answer from an earlier burst")
    seen_ids |= ids
    return calls


def _burst_measurement(per_round: list[int], how: str, litellm: TwinResult | None = None) -> Measurement:
    worst = max(per_round)
    notes = (
        f"{how}; upstream calls per burst: {', '.join(map(str, per_round))}; "
        f"in every burst all {BURST} callers got the same response id"
        if worst == 1
        else f"{how}; upstream calls per burst: {', '.join(map(str, per_round))}"
    )
    return Measurement(percentile(per_round, 50), worst, "calls", target=1, notes=notes, worst=worst, digits=0, litellm=litellm)


def _litellm_burst(twin: Twin, upstream: MockUpstream, per_round: list[int], hits: list[int], ids: list[int]) -> None:
    """One LiteLLM burst (bench/litellm_runner.py), its upstream calls counted here."""
    before = upstream.call_count()
    block = twin.block()
    if block is None:
        return
    calls = upstream.call_count() - before
    expected = reply_text(block["prompt"])
    if block["answers"] != [expected]:
        twin.fail(f"LiteLLM's callers got {block['answers']!r:.300}, expected {expected!r}")
        return
    if block["ids"] > calls:
        twin.fail(f"LiteLLM's callers got {block['ids']} response ids from {calls} upstream calls")
        return
    per_round.append(calls)
    hits.append(block["hits"])
    ids.append(block["ids"])


def _litellm_burst_result(twin: Twin, per_round: list[int], hits: list[int], ids: list[int]) -> TwinResult:
    check(len(per_round) == BURST_ROUNDS, f"LiteLLM ran {len(per_round)} of {BURST_ROUNDS} bursts")
    notes = (
        f"{BURST_ROUNDS} bursts of {BURST} threads (`threading.Barrier`), each right after one of llmstash's; upstream calls "
        f"per burst: {', '.join(map(str, per_round))}; callers answered from LiteLLM's cache: {', '.join(map(str, hits))}; "
        f"distinct response ids: {', '.join(map(str, ids))}"
    )
    return TwinResult("ok", percentile(per_round, 50), max(per_round), "calls", digits=0, notes=notes)


@workload("concurrent-misses", twin=True)
def concurrent_misses() -> Measurement:
    """Upstream calls made by 100 threads sending one identical, uncached request at once (target: 1, the rest wait for it); LiteLLM: the same 100 threads with `litellm.completion(..., caching=True)`."""
    cache = Cache()
    per_round: list[int] = []
    seen_ids: set[str] = set()
    litellm_rounds: list[int] = []
    litellm_hits: list[int] = []
    litellm_ids: list[int] = []
    with (
        _burst_upstream() as upstream,
        _burst_upstream() as litellm_upstream,
        Twin("concurrent-misses", base_url=litellm_upstream.base_url, model=MODEL, burst=BURST) as twin,
        active_cache(cache),
    ):
        for number in range(BURST_ROUNDS + 1):  # burst 0 warms up (HTTP client, threads) and is not counted
            messages = _burst_prompt("thread", number)
            barrier = threading.Barrier(BURST)
            results: list[Any] = [None] * BURST

            def caller(
                slot: int,
                messages: list[dict[str, str]] = messages,
                barrier: threading.Barrier = barrier,
                results: list[Any] = results,
            ) -> None:
                try:
                    barrier.wait(timeout=30)
                    results[slot] = llmstash.completion(model=MODEL, messages=messages, api_base=upstream.base_url)
                except BaseException as exc:
                    results[slot] = exc

            threads = [threading.Thread(target=caller, args=(slot,), name=f"bench-burst-{slot}") for slot in range(BURST)]
            before = (upstream.call_count(), cache.stats())
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            stuck = sum(thread.is_alive() for thread in threads)
            check(stuck == 0, f"burst {number}: {stuck} of {BURST} callers still waiting after 60 s")
            calls = _check_burst("thread", number, upstream, cache, before, results, seen_ids)
            if number > 0:
                per_round.append(calls)
                _litellm_burst(twin, litellm_upstream, litellm_rounds, litellm_hits, litellm_ids)
        twin.finish()
        litellm = twin.outcome(lambda: _litellm_burst_result(twin, litellm_rounds, litellm_hits, litellm_ids))
    how = f"{BURST_ROUNDS} bursts of {BURST} threads released by a threading.Barrier; upstream answers in {BURST_DELAY:g} s"
    return _burst_measurement(per_round, how, litellm)


@workload("concurrent-misses-async")
def concurrent_misses_async() -> Measurement:
    """The same with 100 asyncio tasks in one event loop, `await llmstash.acompletion(...)` (target: 1)."""
    cache = Cache()
    per_round: list[int] = []
    seen_ids: set[str] = set()

    async def bursts(upstream: MockUpstream) -> None:
        for number in range(BURST_ROUNDS + 1):  # burst 0 warms up (the loop's HTTP client) and is not counted
            messages = _burst_prompt("task", number)
            barrier = asyncio.Barrier(BURST)

            async def caller(messages: list[dict[str, str]] = messages, barrier: asyncio.Barrier = barrier) -> Any:
                await barrier.wait()
                return await llmstash.acompletion(model=MODEL, messages=messages, api_base=upstream.base_url)

            before = (upstream.call_count(), cache.stats())
            results = await asyncio.wait_for(asyncio.gather(*(caller() for _ in range(BURST)), return_exceptions=True), 60)
            calls = _check_burst("task", number, upstream, cache, before, list(results), seen_ids)
            if number > 0:
                per_round.append(calls)

    with _burst_upstream() as upstream, active_cache(cache):
        asyncio.run(bursts(upstream))
    how = f"{BURST_ROUNDS} bursts of {BURST} tasks released by an asyncio.Barrier; upstream answers in {BURST_DELAY:g} s"
    return _burst_measurement(per_round, how)


# ----- embedding batches ------------------------------------------------------------------------

EMBED_MODEL = "openai/bench-embed"
EMBED_ITEMS = 1_000  # items per batch ...
EMBED_CACHED = 500  # ... of which this many are cached; the rest are new in every round
EMBED_DIMENSIONS = 256
EMBED_ROUNDS = 40  # interleaved rounds, each one batch call and one direct call
EMBED_WARMUP = 4


class _PreparedEmbeddings(MockUpstream):
    """MockUpstream(delay=0) giving its own embedding answers, worked out before the timed calls.

    The stock mock spends ~0.25 s of CPU per 500-item answer in this process (hashing out 128,000
    floats, then ``json.dumps`` of 1.3 MB), and that time varies by tens of ms from call to call:
    enough to swing p50(batch) - p50(direct) by ±30 ms. Here ``prepare(items)`` has the mock compute
    its answer for the next request in advance (the vectors are the mock's own), and answers are
    written with orjson, so the upstream's share of each call is small and steady.
    """

    def __init__(self, dimensions: int) -> None:
        super().__init__(delay=0.0, embedding_dimensions=dimensions)
        self._prepared: tuple[dict[str, Any], dict[str, Any]] | None = None
        self.prepared_answers = 0
        handler = self._server.RequestHandlerClass

        class OrjsonHandler(handler):  # type: ignore[valid-type,misc]
            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = orjson.dumps(payload)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server.RequestHandlerClass = OrjsonHandler

    def prepare(self, model: str, items: list[str]) -> None:
        """Compute now the answer to the next requests for ``items`` (what ``answer`` would give)."""
        body = {"model": model, "input": items}
        self._prepared = (body, super().answer("/v1/embeddings", body, 0))

    def answer(self, path: str, body: dict[str, Any], number: int) -> dict[str, Any]:
        prepared = self._prepared
        if prepared is not None and path.split("?")[0].rstrip("/").endswith("/embeddings") and body == prepared[0]:
            self.prepared_answers += 1
            return prepared[1]
        return super().answer(path, body, number)


def _embed_text(kind: str, round_number: int, i: int) -> str:
    """Item texts of one length, so that every round sends the upstream the same amount of work."""
    return f"Bench {kind} document {round_number:04d}-{i:04d}: a cache keeps recent answers close at hand."


def _check_embeddings(answer: Any, texts: list[str], sample: range | list[int]) -> None:
    data = answer.data
    check(len(data) == len(texts), f"the answer has {len(data)} embeddings for {len(texts)} inputs")
    check([item["index"] for item in data] == list(range(len(texts))), "the answer's indices are not 0..N-1")
    for i in sample:
        expected = vector_for(texts[i], EMBED_DIMENSIONS)
        check(data[i]["embedding"] == expected, f"embedding {i} is not the upstream's vector for its input")


def _check_embedding_call(
    upstream: _PreparedEmbeddings,
    cache: Cache,
    before: tuple[int, int, dict[str, Any]],
    arm: str,
    answer: Any,
    batch: list[str],
    missing: list[str],
) -> None:
    """One call of either arm made one upstream call that sent exactly ``missing``, and answered right."""
    calls_before, prepared_before, stats_before = before
    made = upstream.call_count() - calls_before
    check(made == 1, f"the {arm} call made {made} upstream calls, expected 1")
    sent = upstream.calls[-1].body["input"]
    check(sent == missing, f"the {arm} call sent {len(sent)} items upstream, expected exactly the {len(missing)} uncached ones")
    check(upstream.prepared_answers == prepared_before + 1, f"the {arm} call's request was not the one prepared for it")
    if arm == "direct":
        _check_embeddings(answer, missing, [0, len(missing) - 1])
        return
    stats = cache.stats()
    delta = {name: stats[name] - stats_before[name] for name in ("hits", "misses", "writes", "errors")}
    expected = {"hits": EMBED_CACHED, "misses": len(missing), "writes": 1, "errors": 0}
    check(delta == expected, f"the batch moved the cache counters by {delta}, expected {expected}")
    hidden = answer._hidden_params
    check(hidden["cached_items"] == EMBED_CACHED and hidden["total_items"] == EMBED_ITEMS, f"the batch says {hidden}")
    _check_embeddings(answer, batch, [0, 1, EMBED_ITEMS - 2, EMBED_ITEMS - 1])


@workload("embedding-batch")
def embedding_batch() -> Measurement:
    """What the cache adds to a 1,000-item embedding batch with 500 items cached (256-dimension vectors): p50(batch) - p50(a direct call, `llmstash.cache = None`, sending just the 500 uncached items)."""
    cache = Cache()
    cached_texts = [_embed_text("cached", 0, i) for i in range(EMBED_CACHED)]
    samples: dict[str, list[int]] = {"batch": [], "direct": []}
    clock = time.perf_counter_ns
    upstream = _PreparedEmbeddings(EMBED_DIMENSIONS)
    with upstream:
        base = upstream.base_url
        with active_cache(cache):
            llmstash.embedding(model=EMBED_MODEL, input=cached_texts, api_base=base)
        check(cache.stats()["writes"] == 1 and upstream.call_count() == 1, f"the cached items were not stored: {cache.stats()}")
        with gc_paused(), active_cache(None):  # each call below sets llmstash.cache for its arm
            for round_number in range(1, EMBED_WARMUP + EMBED_ROUNDS + 1):
                missing = [_embed_text("fresh", round_number, i) for i in range(EMBED_ITEMS - EMBED_CACHED)]
                batch = [text for pair in zip(cached_texts, missing, strict=True) for text in pair]  # cached, new, cached, ...
                upstream.prepare(EMBED_MODEL.split("/", 1)[1], missing)  # both arms send exactly these items
                for arm in ("batch", "direct") if round_number % 2 == 0 else ("direct", "batch"):  # drift hits both arms
                    before = (upstream.call_count(), upstream.prepared_answers, cache.stats())
                    llmstash.cache = cache if arm == "batch" else None
                    answer: Any = None  # free the previous answer's 128,000+ floats now, not inside the timed call
                    start = clock()
                    answer = llmstash.embedding(model=EMBED_MODEL, input=batch if arm == "batch" else missing, api_base=base)
                    elapsed = clock() - start
                    try:
                        _check_embedding_call(upstream, cache, before, arm, answer, batch, missing)
                    except BenchError as exc:
                        raise BenchError(f"round {round_number}: {exc}") from None
                    if round_number > EMBED_WARMUP:
                        samples[arm].append(elapsed)
        _check_embeddings(answer, batch if arm == "batch" else missing, range(len(answer.data)))  # the last answer, in full
    on50, on99 = (value / 1000 for value in p50_p99_us(samples["batch"]))
    off50, off99 = (value / 1000 for value in p50_p99_us(samples["direct"]))
    notes = (
        f"batch p50 {on50:.1f} ms / p99 {on99:.1f} ms; direct p50 {off50:.1f} ms / p99 {off99:.1f} ms; "
        f"every batch sent exactly its {EMBED_ITEMS - EMBED_CACHED} uncached items upstream; "
        f"{EMBED_ROUNDS} interleaved rounds after {EMBED_WARMUP} warm-up rounds; the upstream's answers are worked out "
        "before each round and written with orjson (see `_PreparedEmbeddings`)"
    )
    return Measurement(on50 - off50, None, "ms", target=2, notes=notes)


# ----- streams ----------------------------------------------------------------------------------

STREAM_CALLS = 2_000  # timed replays per block


def _stream_text(chunks: list[Any]) -> str:
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


@workload("stream-hit", twin=True)
def stream_hit() -> Measurement:
    """`list(llmstash.completion(..., stream=True))` answered from the in-memory cache: a cached stream replayed and fully read; LiteLLM: `list(litellm.completion(..., stream=True, caching=True))` with `litellm.cache = litellm.Cache()`."""
    cache = Cache()
    litellm_blocks: list[list[int]] = []
    with local_upstream() as upstream, local_upstream() as litellm_upstream, active_cache(cache):
        kwargs: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "api_base": upstream.base_url, "stream": True}
        twin_params = {"base_url": litellm_upstream.base_url, "model": MODEL, "calls": LITELLM_STREAM_CALLS}
        with Twin("stream-hit", warmup=LITELLM_STREAM_WARMUP, **twin_params) as twin:
            ready = twin.ready
            if ready is not None and ready["text"] != reply_text(MESSAGES[0]["content"]):
                twin.fail(f"LiteLLM's streamed answer {ready['text']!r:.200} is not the upstream's")
            if ready is not None and litellm_upstream.call_count() < 1:
                twin.fail("LiteLLM's first stream did not reach the upstream")
            litellm_calls_at_ready = litellm_upstream.call_count()
            live: list[Any] = list(llmstash.completion(**kwargs))  # the miss: streamed from the upstream, stored once complete
            check(
                bool(live) and not any(chunk._hidden_params["cache_hit"] for chunk in live),
                "the first stream should have been a miss",
            )
            check(cache.stats()["writes"] == 1, f"the streamed answer was not stored: {cache.stats()}")
            hits_before = cache.stats()["hits"]

            def call() -> object:
                return list(llmstash.completion(**kwargs))

            time_calls(call, HIT_WARMUP)
            blocks = []
            for _ in range(HIT_BLOCKS):
                blocks.append(time_calls(call, STREAM_CALLS))
                if (block := twin.block()) is not None:
                    litellm_blocks.append(block["samples_ns"])
            litellm_timed_calls = litellm_upstream.call_count() - litellm_calls_at_ready
            twin.finish()

            def litellm_result() -> TwinResult:
                assert ready is not None
                check(litellm_timed_calls == 0, f"{litellm_timed_calls} of LiteLLM's timed replays reached the upstream")
                pooled = percentile([ns / 1000 for block in litellm_blocks for ns in block], 50)
                notes = (
                    f"quietest of {len(litellm_blocks)} blocks of {LITELLM_STREAM_CALLS:,} replays of "
                    f"{ready['replay_chunks']} chunks (the answer streamed live as {ready['live_chunks']}), each block run "
                    f"right after one of llmstash's; p50 over all {len(litellm_blocks) * LITELLM_STREAM_CALLS:,} replays "
                    f"{pooled:,.1f} µs; every timed replay came back marked `cache_hit` True (on the stream wrapper's "
                    "`_hidden_params`: LiteLLM does not mark the chunks), with the first answer's id on every chunk and its "
                    "text, and none reached the upstream"
                )
                return _twin_timed(litellm_blocks, "µs", notes)

            litellm = twin.outcome(litellm_result)

        replay: list[Any] = list(llmstash.completion(**kwargs))
        check(all(chunk._hidden_params["cache_hit"] for chunk in replay), "a replayed chunk was not marked as a cache hit")
        check(_stream_text(replay) == _stream_text(live), "the replay's text differs from the streamed answer")
        check({chunk.id for chunk in replay} == {live[0].id}, "the replay's chunks do not carry the stored answer's id")
        check(replay[-1].choices[0].finish_reason == "stop", "the replay does not end with the stored finish_reason")
        check(upstream.call_count() == 1, f"the upstream got {upstream.call_count()} calls; only the first should reach it")
        check(
            cache.stats()["hits"] - hits_before == HIT_WARMUP + HIT_BLOCKS * STREAM_CALLS + 1,
            "not every timed stream was a cache hit",
        )
        check(cache.stats()["errors"] == 0, f"the cache reported errors: {cache.stats()}")
    p50, p99 = p50_p99_us(quietest(blocks))
    pooled = percentile([ns / 1000 for block in blocks for ns in block], 50)
    words = len(_stream_text(live).split())
    notes = (
        f"quietest of {HIT_BLOCKS} blocks of {STREAM_CALLS:,} replays of {len(replay)} chunks (a {words}-word answer "
        f"streamed as {len(live)} chunks); p50 over all {HIT_BLOCKS * STREAM_CALLS:,} replays {pooled:.1f} µs"
    )
    return Measurement(p50, p99, "µs", target=None, notes=notes, litellm=litellm)


# ----- Redis ------------------------------------------------------------------------------------

REDIS_BLOCKS = 5  # alternating blocks of llmstash hits and raw GETs
REDIS_CALLS = 1_000
REDIS_RATIO_TARGET = 1.3


def _redis_gets(client: Any) -> int:
    """GET commands the server has run so far."""
    return int(client.info("commandstats").get("cmdstat_get", {}).get("calls", 0))


def _redis_hit(
    cache_kwargs: dict[str, Any], with_twin: bool = False
) -> tuple[list[list[int]], list[list[int]], str, TwinResult | None]:
    """Alternating blocks: llmstash Redis hits, and the floor (raw redis-py GET of the same bytes
    plus decoding them); ``with_twin``: and LiteLLM's Redis hits, on the same server. Returns
    (hit blocks, floor blocks, note, LiteLLM's result)."""
    import redis

    with tempfile.TemporaryDirectory(prefix="llmstash-bench-redis-") as workdir:
        server = ValkeyServer(Path(workdir)).start()
        try:
            cache = Cache(type="redis", url=server.url, **cache_kwargs)
            twin_params = {"model": MODEL, "redis_port": server.port, "calls": LITELLM_HIT_CALLS, "warmup": LITELLM_HIT_WARMUP}
            with (
                local_upstream() as upstream,
                local_upstream() as litellm_upstream,
                Twin("redis-hit" if with_twin else None, base_url=litellm_upstream.base_url, **twin_params) as twin,
                active_cache(cache),
            ):
                kwargs: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "api_base": upstream.base_url}
                first = llmstash.completion(**kwargs)
                key = first._hidden_params["cache_key"]
                raw_client = redis.Redis(host="127.0.0.1", port=server.port)
                stored = raw_client.get("llmstash:" + key)
                check(stored is not None, "the answer was not stored in Redis")

                def hit() -> object:
                    return llmstash.completion(**kwargs)

                def floor() -> object:
                    return orjson.loads(raw_client.get("llmstash:" + key)[3:])  # type: ignore[index]

                time_calls(hit, HIT_WARMUP)
                time_calls(floor, HIT_WARMUP)
                hits, floors = [], []
                litellm_blocks: list[list[int]] = []
                litellm_calls_at_ready = litellm_upstream.call_count()
                for _ in range(REDIS_BLOCKS):
                    hits.append(time_calls(hit, REDIS_CALLS))
                    floors.append(time_calls(floor, REDIS_CALLS))
                    gets_before = _redis_gets(raw_client)
                    if (block := twin.block()) is not None:
                        gets = _redis_gets(raw_client) - gets_before
                        if gets < LITELLM_HIT_CALLS:  # each of LiteLLM's hits must have read Redis, not a copy in memory
                            twin.fail(f"LiteLLM's block of {LITELLM_HIT_CALLS} hits sent Redis {gets} GETs")
                        litellm_blocks.append(block["samples_ns"])
                litellm_timed_calls = litellm_upstream.call_count() - litellm_calls_at_ready
                twin.finish()

                def litellm_result() -> TwinResult:
                    check(litellm_timed_calls == 0, f"{litellm_timed_calls} of LiteLLM's timed calls reached the upstream")
                    notes = (
                        f'`litellm.Cache(type="redis", host="127.0.0.1", port=..., ttl=600)` on the same valkey-server; '
                        f"quietest of {len(litellm_blocks)} blocks of {LITELLM_HIT_CALLS:,} calls, each block run after one "
                        "of llmstash's and one of the floor's; every timed call came back with `cache_hit` True and the first "
                        "answer's id, none reached the upstream, and each sent Redis a GET"
                    )
                    return _twin_timed(litellm_blocks, "µs", notes)

                litellm = twin.outcome(litellm_result)
                last = llmstash.completion(**kwargs)
                check(last._hidden_params["cache_hit"] and last.id == first.id, "the calls were not answered from Redis")
                check(upstream.call_count() == 1, f"the upstream got {upstream.call_count()} calls; only the first should")
                check(cache.stats()["errors"] == 0, f"the cache reported errors: {cache.stats()}")
            cache.close()
        finally:
            server.stop()
    note = f"{len(stored)} stored bytes; {REDIS_BLOCKS} alternating blocks of {REDIS_CALLS:,} calls each"
    return hits, floors, note, litellm


@workload("redis-hit", twin=True)
def redis_hit() -> Measurement:
    """`llmstash.completion(...)` answered from Redis (valkey-server on 127.0.0.1); target: p50 ≤ 1.3 times
    the floor, a raw redis-py GET of the same bytes plus decoding them, measured in alternating blocks; LiteLLM: `litellm.Cache(type="redis")` on the same server."""
    hits, floors, note, litellm = _redis_hit({}, with_twin=True)
    p50, p99 = p50_p99_us(quietest(hits))
    floor_p50, _ = p50_p99_us(quietest(floors))
    notes = f"floor (raw GET + decode) p50 {floor_p50:.1f} µs; ratio {p50 / floor_p50:.2f}x; {note}"
    return Measurement(p50, p99, "µs", target=round(REDIS_RATIO_TARGET * floor_p50, 1), notes=notes, litellm=litellm)


@workload("redis-local-tier-hit")
def redis_local_tier_hit() -> Measurement:
    """`llmstash.completion(...)` with `Cache(type="redis", local_tier_ttl=60)`: hits served from the
    in-process tier in front of Redis."""
    hits, _, note, _ = _redis_hit({"local_tier_ttl": 60})
    p50, p99 = p50_p99_us(quietest(hits))
    return Measurement(p50, p99, "µs", notes=note)


# ----- memory -----------------------------------------------------------------------------------


def _mb(value: float) -> str:
    return f"{value / 1e6:,.1f} MB"


@workload("memory-per-entry", twin=True)
def memory_per_entry() -> Measurement:
    """Resident bytes per cached chat completion (a 1,024-character answer) with 100,000 of them in the in-memory cache (`Cache()`), measured in a fresh process; LiteLLM: the same in `litellm.Cache()`, with its entry cap raised to 100,000 (as it comes it keeps 200)."""
    n, size = MEMORY_ENTRIES, MEMORY_CONTENT
    with Twin("memory-per-entry", model=MODEL, entries=n, content_bytes=size) as twin:
        if twin.ready is not None and twin.ready.get("digest") != entries_digest(n, size):
            twin.fail("LiteLLM's entries are not the ones llmstash stores")
        out = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "memory_child.py"), "--entries", str(n), "--content-bytes", str(size)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        check(out.returncode == 0, f"bench/memory_child.py failed: {out.stderr.strip()[-2000:]}")
        child = json.loads(out.stdout.strip().splitlines()[-1])
        check(child["digest"] == entries_digest(n, size), "bench/memory_child.py stored other entries than asked")
        check(child["held"] == n, f"llmstash's cache holds {child['held']} of the {n:,} entries stored")
        grown = child["rss_after"] - child["rss_before"]
        check(grown > n * size, f"RSS grew by {grown:,} bytes: less than the {n:,} answers' {n * size:,} characters")
        block = twin.block()  # LiteLLM's process, which stores its entries now that llmstash's child is gone
        final = twin.finish()

        def litellm_result() -> TwinResult:
            assert block is not None and final is not None
            held = block["held"]
            check(held == n, f"LiteLLM's cache holds {held:,} of the {n:,} entries stored")
            litellm_grown = block["rss_after"] - block["rss_before"]
            check(litellm_grown > n * size, f"LiteLLM's RSS grew by {litellm_grown:,} bytes, less than the answers' size")
            notes = (
                f"`litellm.Cache()` as it comes keeps at most {final['default_cap']} entries in memory (its InMemoryCache's "
                f"`max_size_in_memory`, which `Cache()` does not take): storing the same {n:,} entries in one left it "
                f"holding {final['default_held']:,}; so the figure is for a `litellm.Cache()` with "
                f"`litellm.cache.cache.max_size_in_memory = {n}`, which held all {n:,}: RSS {_mb(block['rss_before'])} before, "
                f"{_mb(block['rss_after'])} after ({block['seconds']:.1f} s), in the runner's own fresh process; an entry is the "
                f"response as a {block['stored_chars']:,}-character JSON string in a dict with a timestamp, plus a TTL and an "
                "expiry-heap item; stored with `litellm.cache.add_cache(response, model=..., messages=...)` (what its "
                "completion path calls), the response a ModelResponse from `litellm.completion(..., mock_response=...)`; "
                "sampled entries then answered `litellm.completion(..., caching=True)` as hits with their own answers"
            )
            return TwinResult("ok", litellm_grown / held, None, "bytes", digits=0, notes=notes)

        litellm = twin.outcome(litellm_result)
    notes = (
        f"RSS ({child['rss_source']}, read after `gc.collect()`) {_mb(child['rss_before'])} before, {_mb(child['rss_after'])} "
        f"after storing {n:,} entries ({child['seconds']:.1f} s) in a fresh process, all {n:,} held; an entry is stored as "
        f"{child['stored_bytes']:,} bytes (the envelope with the response's JSON), and the cache charges "
        f"{child['charged_bytes'] / n:,.0f} bytes per entry against `max_memory_bytes`; stored with "
        "`Cache.add_cache(response, model=..., messages=...)`, which writes what a completion call with those arguments "
        "writes, the response a ModelResponse from `llmstash.completion(..., mock_response=...)` (no HTTP) with a distinct "
        f"{size:,}-character answer per entry; sampled entries then answered `llmstash.completion(...)` as hits with their "
        "own answers (see bench/memory_child.py)"
    )
    return Measurement(grown / n, None, "bytes", notes=notes, digits=0, litellm=litellm)
