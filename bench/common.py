"""Shared pieces of the benchmark harness: the registry, timing loops, percentiles, the upstream."""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import llmstash
from llmstash.caching import Cache
from llmstash.testing.upstream import MockUpstream

# ----- the registry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TwinResult:
    """LiteLLM's figures for a workload (bench/twin.py), or why there are none: ``status`` is
    "ok", "n/a" (LiteLLM is not installed or does not import) or "error" (it ran, but failed or
    did not do what the workload measures)."""

    status: str
    p50: float | None = None
    p99: float | None = None
    unit: str = ""
    digits: int = 1
    notes: str = ""


@dataclass(frozen=True)
class Measurement:
    """What one workload measured. Numbers are in ``unit``; ``target`` bounds ``p50``, or ``worst``
    when it is given (count workloads, where every round must meet the target): from above, or
    from below when ``higher_is_better`` (throughputs, where ``p99`` is the figure of the p99 round
    time, the slow tail, and the ratio to LiteLLM is llmstash / LiteLLM)."""

    p50: float
    p99: float | None
    unit: str
    target: float | None = None
    notes: str = ""
    worst: float | None = None
    digits: int = 1
    """Decimals shown in the table (0 for counts)."""
    litellm: TwinResult | None = None
    """LiteLLM's figures for the same workload, measured in the same run (workloads with a twin)."""
    higher_is_better: bool = False
    """A throughput: the target is a floor, and the ratio is llmstash / LiteLLM."""

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "—"
        bounded = self.p50 if self.worst is None else self.worst
        met = bounded >= self.target if self.higher_is_better else bounded <= self.target
        return "PASS" if met else "MISS"


@dataclass(frozen=True)
class Workload:
    name: str
    run: Callable[[], Measurement]
    description: str
    twin: bool = False
    """Whether the workload also measures LiteLLM (bench/litellm_runner.py)."""


WORKLOADS: dict[str, Workload] = {}
"""Every workload by name, in the order the table shows them."""


def workload(name: str, twin: bool = False) -> Callable[[Callable[[], Measurement]], Callable[[], Measurement]]:
    """Register a function as the workload ``name``; its docstring's first line describes it.
    ``twin``: it also measures LiteLLM, in ``Measurement.litellm``."""

    def register(fn: Callable[[], Measurement]) -> Callable[[], Measurement]:
        if name in WORKLOADS:
            raise ValueError(f"workload {name!r} is registered twice")
        description = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        WORKLOADS[name] = Workload(name, fn, description, twin)
        return fn

    return register


class BenchError(RuntimeError):
    """A workload did not measure what it claims (e.g. a 'hit' went to the upstream)."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise BenchError(message)


# ----- statistics -------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``samples``."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def quietest(blocks: list[list[int]]) -> list[int]:
    """The block of samples with the lowest median: the one least disturbed by other processes
    (on a shared machine, neighbours' load only ever adds time; timeit reports the min for the same reason)."""
    return min(blocks, key=lambda block: percentile(block, 50))


def p50_p99_us(samples_ns: list[int]) -> tuple[float, float]:
    """(p50, p99) of nanosecond samples, in microseconds."""
    us = [s / 1000 for s in samples_ns]
    return percentile(us, 50), percentile(us, 99)


# ----- timing loops -----------------------------------------------------------------------------


@contextmanager
def gc_paused() -> Iterator[None]:
    """Collect, then keep the cyclic GC off for the timed block (as timeit does); restore after."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def time_calls(call: Callable[[], object], n: int) -> list[int]:
    """Nanoseconds taken by each of ``n`` calls of ``call``."""
    clock = time.perf_counter_ns
    samples = [0] * n
    with gc_paused():
        for i in range(n):
            start = clock()
            call()
            samples[i] = clock() - start
    return samples


async def atime_calls(call: Callable[[], Awaitable[object]], n: int) -> list[int]:
    """Nanoseconds taken by each of ``n`` awaits of ``call()``, in the running event loop."""
    clock = time.perf_counter_ns
    samples = [0] * n
    with gc_paused():
        for i in range(n):
            start = clock()
            await call()
            samples[i] = clock() - start
    return samples


# ----- the environment of a workload ------------------------------------------------------------


@contextmanager
def local_upstream() -> Iterator[MockUpstream]:
    """A MockUpstream on 127.0.0.1 that answers at once."""
    with MockUpstream(delay=0.0) as upstream:
        yield upstream


@contextmanager
def active_cache(cache: Cache | None) -> Iterator[Cache | None]:
    """Make ``cache`` the active ``llmstash.cache`` for the block, then restore the previous one."""
    previous = llmstash.cache
    llmstash.cache = cache
    try:
        yield cache
    finally:
        llmstash.cache = previous
