"""LiteLLM's side of the llmstash benchmarks: the same workloads, measured the same way, in LiteLLM.

Run by the Python of LiteLLM's own venv (``make bench`` creates ``.venv-litellm``), never by
llmstash's: this file imports only the standard library and LiteLLM (and what LiteLLM brings).

    .venv-litellm/bin/python bench/litellm_runner.py probe
    .venv-litellm/bin/python bench/litellm_runner.py sync-hit --base-url http://127.0.0.1:PORT/v1
    .venv-litellm/bin/python bench/litellm_runner.py redis-hit --base-url ... --redis-port 6379 --blocks 5 --calls 500

Workloads (twins of those in bench/workloads.py): import, sync-hit, async-hit, miss-overhead,
concurrent-misses, redis-hit. The upstream (llmstash's MockUpstream) and the valkey-server are
the harness's, on 127.0.0.1; the harness counts the upstream's calls and Redis's GETs itself.

Timing is as in bench/common.py: warm-up first, then blocks of calls, each call timed with
``time.perf_counter_ns`` while the cyclic GC is off. Every call that is meant to be a hit is checked
(outside the timed interval) to have come back with ``_hidden_params["cache_hit"] is True`` and the
first answer's id; any other answer stops the run with an error.

Output is JSON, one object per line, on standard output (anything LiteLLM itself prints goes to
standard error instead). Standalone, the script runs ``--blocks`` blocks and prints one summary
(every block's per-call samples in ns, and the p50/p99 in µs of the quietest block). With
``--interleave`` (the harness's mode) it sets up and warms up, prints ``{"event": "ready"}``, then
runs one block per ``block`` line read from standard input, printing ``{"event": "block", ...}``
each time, until ``finish``, which prints ``{"event": "result", ...}``. Errors print
``{"event": "error", "message": ...}`` and exit with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Any

API_KEY = "sk-bench"
MESSAGES = [{"role": "user", "content": "In one sentence, what is a cache?"}]
UNKNOWN_MODEL = "openai/bench"  # a name absent from LiteLLM's cost map (see HitWorkload.finish)
CHILD_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # else `import litellm` fetches the cost map over the network


class BenchError(RuntimeError):
    """LiteLLM did not do what the workload measures (e.g. a 'hit' that was not a cache hit)."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise BenchError(message)


# ----- loopback only ----------------------------------------------------------------------------

VIOLATIONS: list[str] = []


def _loopback(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str) or host == "localhost":
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _guard(event: str, args: tuple[Any, ...]) -> None:
    """Refuse (and remember) any name lookup or connection to an address off this machine."""
    if event == "socket.getaddrinfo":
        host = args[0]
    elif event == "socket.connect":
        address = args[1]
        if not isinstance(address, tuple):  # AF_UNIX
            return
        host = address[0]
    else:
        return
    if host is not None and not _loopback(host):
        VIOLATIONS.append(f"{event} {host!r}")
        raise OSError(f"bench: {event} to {host!r} refused (loopback only)")


def check_no_network() -> None:
    check(not VIOLATIONS, f"LiteLLM tried to reach the network: {', '.join(sorted(set(VIOLATIONS)))}")


# ----- timing (as bench/common.py) --------------------------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


@contextmanager
def gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def cache_hit(response: Any) -> bool:
    return getattr(response, "_hidden_params", {}).get("cache_hit") is True


def time_hits(call: Callable[[], Any], n: int, expected_id: str) -> list[int]:
    """Nanoseconds of each of ``n`` calls, each checked (untimed) to be a cache hit on ``expected_id``."""
    clock = time.perf_counter_ns
    samples = [0] * n
    bad: list[str] = []
    with gc_paused():
        for i in range(n):
            start = clock()
            response = call()
            samples[i] = clock() - start
            if not cache_hit(response) or response.id != expected_id:
                bad.append(f"cache_hit={response._hidden_params.get('cache_hit')!r} id={response.id}")
    check(not bad, f"{len(bad)} of {n} timed calls were not cache hits on {expected_id}, first: {bad[0] if bad else ''}")
    return samples


async def atime_hits(call: Callable[[], Any], n: int, expected_id: str) -> list[int]:
    clock = time.perf_counter_ns
    samples = [0] * n
    bad: list[str] = []
    with gc_paused():
        for i in range(n):
            start = clock()
            response = await call()
            samples[i] = clock() - start
            if not cache_hit(response) or response.id != expected_id:
                bad.append(f"cache_hit={response._hidden_params.get('cache_hit')!r} id={response.id}")
    check(not bad, f"{len(bad)} of {n} timed calls were not cache hits on {expected_id}, first: {bad[0] if bad else ''}")
    return samples


# ----- workloads --------------------------------------------------------------------------------


class Workload:
    """setup() warms up; block() runs one timed block; finish() runs the final checks."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def setup(self) -> dict[str, Any]:
        return {}

    def block(self) -> dict[str, Any]:
        raise NotImplementedError

    def finish(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


class ImportWorkload(Workload):
    """`import litellm` in a fresh interpreter; one block is one process."""

    CODE = "import time; t=time.perf_counter(); import litellm; print(time.perf_counter()-t)"

    def setup(self) -> dict[str, Any]:
        # Bytecode cached, as for an installed package: pip compiled LiteLLM's when it installed it,
        # and the warm-up processes write whatever is missing into the venv.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
        self._env = env | CHILD_ENV
        for _ in range(self.args.warmup):
            self._once()
        return {}

    def _once(self) -> int:
        out = subprocess.run([sys.executable, "-c", self.CODE], env=self._env, capture_output=True, text=True, timeout=120)
        check(out.returncode == 0, f"`import litellm` failed: {out.stderr.strip()[-2000:]}")
        return round(float(out.stdout.strip().splitlines()[-1]) * 1e9)

    def block(self) -> dict[str, Any]:
        return {"samples_ns": [self._once()]}


class HitWorkload(Workload):
    """Identical completions answered from LiteLLM's cache, after one miss stored the answer."""

    use_async = False

    def make_cache(self) -> Any:
        import litellm

        return litellm.Cache()

    def kwargs(self, model: str | None = None) -> dict[str, Any]:
        return {
            "model": model or self.args.model,
            "messages": MESSAGES,
            "api_base": self.args.base_url,
            "api_key": API_KEY,
            "caching": True,
        }

    def setup(self) -> dict[str, Any]:
        import litellm

        litellm.cache = self.make_cache()
        kwargs = self.kwargs()
        self.loop = asyncio.new_event_loop() if self.use_async else None
        first = self._call(kwargs)
        check(not cache_hit(first), "the first call should have been a miss")
        self.first_id = first.id
        # LiteLLM may store the answer after returning it (its async path writes in a background
        # task), so wait for the first hit before warming up: at most 50 calls, 10 ms apart.
        for _ in range(50):
            again = self._call(kwargs)
            if cache_hit(again):
                break
            time.sleep(0.01)
        check(cache_hit(again) and again.id == first.id, f"no cache hit after 50 calls (last: {again._hidden_params})")
        self._timed(kwargs, self.args.warmup)
        return {"first_id": first.id}

    def _call(self, kwargs: dict[str, Any]) -> Any:
        import litellm

        if self.loop is not None:
            return self.loop.run_until_complete(litellm.acompletion(**kwargs))
        return litellm.completion(**kwargs)

    def _timed(self, kwargs: dict[str, Any], n: int, expected_id: str | None = None) -> list[int]:
        import litellm

        expected = expected_id or self.first_id
        if self.loop is not None:

            async def call() -> Any:
                return await litellm.acompletion(**kwargs)

            return self.loop.run_until_complete(atime_hits(call, n, expected))
        return time_hits(lambda: litellm.completion(**kwargs), n, expected)

    def block(self) -> dict[str, Any]:
        return {"samples_ns": self._timed(self.kwargs(), self.args.calls)}

    def finish(self) -> dict[str, Any]:
        last = self._call(self.kwargs())
        check(cache_hit(last) and last.id == self.first_id, "the last call was not answered from the cache")
        result: dict[str, Any] = {}
        if self.args.unknown_model_block:
            # The same hits with a model name LiteLLM has no price for: it looks one up on every call.
            kwargs = self.kwargs(UNKNOWN_MODEL)
            first = self._call(kwargs)
            for _ in range(50):
                again = self._call(kwargs)
                if cache_hit(again):
                    break
                time.sleep(0.01)
            self._timed(kwargs, self.args.warmup, first.id)
            samples = self._timed(kwargs, self.args.calls, first.id)
            result["unknown_model"] = {"model": UNKNOWN_MODEL, "p50_us": percentile([s / 1000 for s in samples], 50)}
        return result

    def close(self) -> None:
        if self.loop is not None:
            self.loop.close()


class AsyncHitWorkload(HitWorkload):
    use_async = True


class RedisHitWorkload(HitWorkload):
    def make_cache(self) -> Any:
        import litellm

        check(self.args.redis_port is not None, "redis-hit needs --redis-port")
        # ttl: LiteLLM's Redis entries otherwise expire after a minute, within a slow run
        return litellm.Cache(type="redis", host="127.0.0.1", port=str(self.args.redis_port), ttl=600)

    def setup(self) -> dict[str, Any]:
        result = super().setup()
        import litellm

        check(type(litellm.cache.cache).__name__ == "RedisCache", f"LiteLLM's cache is a {type(litellm.cache.cache).__name__}")
        return result


class MissOverheadWorkload(Workload):
    """Unique prompts (always misses), alternating rounds with `litellm.cache = Cache()` and `= None`."""

    def setup(self) -> dict[str, Any]:
        import litellm

        self.cache = litellm.Cache()
        self.sequence = 0
        self.round_number = 0
        self.calls = 0
        self.last_cached_prompt = ""
        for arm in (self.cache, None):
            litellm.cache = arm
            with gc_paused():
                for _ in range(self.args.warmup):
                    self._call(arm is not None)
        litellm.cache = None
        return {}

    def _call(self, cached: bool) -> None:
        import litellm

        # every call a new prompt of the same shape and length as llmstash's: always a miss
        prompt = f"Unique bench prompt {self.sequence:09d}: what is a cache?"
        self.sequence += 1
        self.calls += 1
        response = litellm.completion(
            model=self.args.model,
            messages=[{"role": "user", "content": prompt}],
            api_base=self.args.base_url,
            api_key=API_KEY,
            caching=True,
        )
        check(not cache_hit(response), f"a unique prompt was a cache hit: {prompt}")
        if cached:
            self.last_cached_prompt = prompt

    def block(self) -> dict[str, Any]:
        import litellm

        clock = time.perf_counter_ns
        samples: dict[str, list[int]] = {"cached": [], "uncached": []}
        arms = [(self.cache, "cached"), (None, "uncached")]
        with gc_paused():
            for _ in range(self.args.rounds):  # alternate which arm goes first, so drift hits both
                for arm, name in arms if self.round_number % 2 == 0 else arms[::-1]:
                    litellm.cache = arm
                    for _ in range(self.args.per_round):
                        start = clock()
                        self._call(arm is not None)
                        samples[name].append(clock() - start)
                self.round_number += 1
        litellm.cache = None
        return samples

    def finish(self) -> dict[str, Any]:
        import litellm

        # The cached arm really wrote: the last prompt it sent is now a hit (LiteLLM's in-memory
        # cache keeps 200 entries by default, so the last one is still there).
        litellm.cache = self.cache
        time.sleep(0.2)  # any write LiteLLM finishes in the background
        again = litellm.completion(
            model=self.args.model,
            messages=[{"role": "user", "content": self.last_cached_prompt}],
            api_base=self.args.base_url,
            api_key=API_KEY,
            caching=True,
        )
        litellm.cache = None
        check(cache_hit(again), "the cached arm's last answer was not stored in LiteLLM's cache")
        return {"upstream_calls": self.calls}


class ConcurrentMissesWorkload(Workload):
    """One block is one burst: ``--burst`` threads send one identical, uncached request at once."""

    def setup(self) -> dict[str, Any]:
        import litellm

        litellm.cache = litellm.Cache()
        self.number = 0
        self._burst()  # warm-up burst (HTTP clients, threads); the harness does not count it
        return {}

    def _burst(self) -> dict[str, Any]:
        import litellm

        prompt = f"Concurrent thread bench prompt {self.number:04d}: what is a cache?"  # as llmstash's bursts
        self.number += 1
        burst = self.args.burst
        barrier = threading.Barrier(burst)
        results: list[Any] = [None] * burst

        def caller(slot: int) -> None:
            try:
                barrier.wait(timeout=30)
                results[slot] = litellm.completion(
                    model=self.args.model,
                    messages=[{"role": "user", "content": prompt}],
                    api_base=self.args.base_url,
                    api_key=API_KEY,
                    caching=True,
                )
            except BaseException as exc:
                results[slot] = exc

        threads = [threading.Thread(target=caller, args=(slot,)) for slot in range(burst)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        check(not any(thread.is_alive() for thread in threads), "callers still waiting after 120 s")
        errors = [r for r in results if isinstance(r, BaseException)]
        check(not errors, f"{len(errors)} of {burst} callers failed, first: {errors[:1]!r}")
        answers = sorted({r.choices[0].message.content for r in results})
        return {
            "prompt": prompt,
            "answers": answers,
            "ids": len({r.id for r in results}),
            "hits": sum(cache_hit(r) for r in results),
        }

    def block(self) -> dict[str, Any]:
        return self._burst()


class ProbeWorkload(Workload):
    """Import LiteLLM and report its version (the harness's availability check)."""

    def block(self) -> dict[str, Any]:
        return {}


WORKLOADS: dict[str, type[Workload]] = {
    "probe": ProbeWorkload,
    "import": ImportWorkload,
    "sync-hit": HitWorkload,
    "async-hit": AsyncHitWorkload,
    "miss-overhead": MissOverheadWorkload,
    "concurrent-misses": ConcurrentMissesWorkload,
    "redis-hit": RedisHitWorkload,
}


# ----- driver -----------------------------------------------------------------------------------


def summary(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """p50/p99 (µs) of the quietest block, for the timed workloads run standalone."""
    timed = [b["samples_ns"] for b in blocks if "samples_ns" in b]
    if not timed:
        return {}
    quiet = min(timed, key=lambda block: percentile(block, 50))
    us = [s / 1000 for s in quiet]
    return {"p50_us": percentile(us, 50), "p99_us": percentile(us, 99)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="LiteLLM's twin of the llmstash benchmark workloads.")
    parser.add_argument("workload", choices=list(WORKLOADS))
    parser.add_argument("--base-url", default="", help="the upstream, http://127.0.0.1:PORT/v1")
    parser.add_argument("--redis-port", type=int, help="valkey-server/Redis on 127.0.0.1 (redis-hit)")
    parser.add_argument("--model", default="openai/gpt-4o-mini")
    parser.add_argument("--blocks", type=int, default=5, help="blocks to run when not --interleave")
    parser.add_argument("--calls", type=int, default=500, help="timed calls per block (hit workloads)")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up calls (per arm) or processes")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds per block (miss-overhead)")
    parser.add_argument("--per-round", type=int, default=10, help="calls per arm per round (miss-overhead)")
    parser.add_argument("--burst", type=int, default=100, help="threads per burst (concurrent-misses)")
    parser.add_argument("--unknown-model-block", action="store_true", help="hit workloads: also time hits on " + UNKNOWN_MODEL)
    parser.add_argument("--interleave", action="store_true", help="one block per 'block' line on stdin (the harness)")
    args = parser.parse_args(argv)

    # Our protocol keeps the real stdout; whatever LiteLLM prints goes to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    idle_since = [time.process_time_ns()]

    def emit(event: str, **fields: Any) -> None:
        out.write(json.dumps({"event": event, **fields}) + "\n")
        out.flush()
        idle_since[0] = time.process_time_ns()

    def idle_cpu_ns() -> int:
        """CPU this process used since it last answered: while the harness was timing llmstash
        (LiteLLM's background threads, if any), which the harness reports."""
        return time.process_time_ns() - idle_since[0]

    workload: Workload | None = None
    try:
        os.environ.update(CHILD_ENV)
        sys.addaudithook(_guard)
        logging.disable(logging.CRITICAL)  # as the llmstash harness: the checks read results, not logs
        started = time.perf_counter()
        if args.workload != "import":  # that one imports LiteLLM in fresh processes only
            import litellm

            litellm.suppress_debug_info = True  # its "Provider List" banners would only add noise to stderr
        import_s = time.perf_counter() - started
        version = metadata.version("litellm")
        workload = WORKLOADS[args.workload](args)
        setup = workload.setup()
        check_no_network()
        if not args.interleave:
            blocks = [workload.block() for _ in range(args.blocks if args.workload != "probe" else 0)]
            result = workload.finish()
            check_no_network()
            emit(
                "result",
                workload=args.workload,
                version=version,
                import_s=import_s,
                setup=setup,
                blocks=blocks,
                **summary(blocks),
                **result,
            )
            return 0
        emit("ready", version=version, import_s=import_s, **setup)
        for line in sys.stdin:
            command = line.strip()
            idle = idle_cpu_ns()
            if command == "block":
                block = workload.block()
                check_no_network()
                emit("block", idle_cpu_ns=idle, **block)
            elif command == "finish":
                result = workload.finish()
                check_no_network()
                emit("result", idle_cpu_ns=idle, **result)
                return 0
            else:
                raise BenchError(f"unknown command {command!r}")
        raise BenchError("standard input closed before 'finish'")
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, BenchError) else str(exc)
        if VIOLATIONS and "tried to reach the network" not in message:
            message += f" (it had tried to reach the network: {', '.join(sorted(set(VIOLATIONS)))})"
        print(f"litellm_runner {args.workload}: {message}", file=sys.stderr)
        if not isinstance(exc, BenchError):
            import traceback

            traceback.print_exc()
        emit("error", message=message)
        return 1
    finally:
        if workload is not None:
            workload.close()


if __name__ == "__main__":
    sys.exit(main())
