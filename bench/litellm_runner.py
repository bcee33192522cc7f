"""LiteLLM's side of the llmstash benchmarks: the same workloads, measured the same way, in LiteLLM.

Run by the Python of LiteLLM's own venv (``make bench`` creates ``.venv-litellm``), never by
llmstash's: this file imports only the standard library, LiteLLM (and what LiteLLM brings) and
bench/fixtures.py (standard library only: the texts both sides send, shared with the harness).

    .venv-litellm/bin/python bench/litellm_runner.py probe
    .venv-litellm/bin/python bench/litellm_runner.py sync-hit --base-url http://127.0.0.1:PORT/v1
    .venv-litellm/bin/python bench/litellm_runner.py redis-hit --base-url ... --redis-port 6379 --blocks 5 --calls 500

Workloads (twins of those in bench/workloads.py): import, sync-hit, async-hit, hit-100kb-prompt,
async-hits-per-second, disk-hit, miss-overhead, concurrent-misses, stream-hit, redis-hit and
memory-per-entry. The upstream (llmstash's MockUpstream) and the valkey-server are the harness's,
on 127.0.0.1; the harness counts the upstream's calls and Redis's GETs itself.

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
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Any

from fixtures import DEAD_BASE, big_prompt, entries_digest, entry_prompt, entry_text, rss_bytes, text_sha256

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


def settle(limit: float = 1.0, window: float = 0.01) -> None:
    """Wait (up to ``limit`` seconds) until LiteLLM's background threads are done with a block's calls
    (its stream replays log in a thread pool): this process busy less than a tenth of a ``window``. The
    harness reports whatever CPU the runner still uses while llmstash's side runs."""
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        before = time.process_time_ns()
        time.sleep(window)
        if time.process_time_ns() - before < window * 1e8:
            return


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
            "messages": self.messages,
            "api_base": self.args.base_url,
            "api_key": API_KEY,
            "caching": True,
        }

    @property
    def messages(self) -> list[dict[str, str]]:
        if not self.args.prompt_bytes:
            return MESSAGES
        if not hasattr(self, "_big_messages"):
            self._big_messages = [{"role": "user", "content": big_prompt(self.args.prompt_bytes)}]
        return self._big_messages

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
        prompt = self.messages[0]["content"]
        return {"first_id": first.id, "prompt_chars": len(prompt), "prompt_sha256": text_sha256(prompt)}

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


class S3HitWorkload(HitWorkload):
    def make_cache(self) -> Any:
        import litellm

        check(bool(self.args.s3_endpoint and self.args.s3_bucket), "s3-hit needs --s3-endpoint and --s3-bucket")
        return litellm.Cache(
            type="s3",
            s3_bucket_name=self.args.s3_bucket,
            s3_endpoint_url=self.args.s3_endpoint,
            s3_region_name="us-east-1",
            s3_aws_access_key_id="testing",
            s3_aws_secret_access_key="testing",
            ttl=600,
        )

    def setup(self) -> dict[str, Any]:
        result = super().setup()
        import litellm

        check(type(litellm.cache.cache).__name__ == "S3Cache", f"LiteLLM's cache is a {type(litellm.cache.cache).__name__}")
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


class DiskHitWorkload(HitWorkload):
    """Hits from `litellm.Cache(type="disk", disk_cache_dir=<a temporary directory>)`, each checked to
    have read LiteLLM's diskcache (diskcache's own hit counter)."""

    def make_cache(self) -> Any:
        import litellm

        try:
            import diskcache  # noqa: F401
        except ImportError:
            raise BenchError(
                "diskcache is not installed in LiteLLM's venv (`make bench-litellm-venv` installs LITELLM_SPEC, which has it)"
            ) from None
        self.directory = tempfile.mkdtemp(prefix="litellm-bench-disk-")
        return litellm.Cache(type="disk", disk_cache_dir=self.directory)

    def setup(self) -> dict[str, Any]:
        import litellm

        result = super().setup()
        check(type(litellm.cache.cache).__name__ == "DiskCache", f"LiteLLM's cache is a {type(litellm.cache.cache).__name__}")
        self.disk = litellm.cache.cache.disk_cache
        check(self.disk.directory == self.directory, f"LiteLLM's diskcache is in {self.disk.directory}, not {self.directory}")
        self.disk.stats(enable=True)
        return result

    def block(self) -> dict[str, Any]:
        hits_before, _ = self.disk.stats()
        result = super().block()
        disk_hits = self.disk.stats()[0] - hits_before
        check(disk_hits >= self.args.calls, f"{self.args.calls} hits read LiteLLM's diskcache only {disk_hits} times")
        return result | {"disk_hits": disk_hits}

    def close(self) -> None:
        super().close()
        if getattr(self, "directory", None):
            shutil.rmtree(self.directory, ignore_errors=True)


class StreamHitWorkload(Workload):
    """`list(litellm.completion(..., stream=True, caching=True))` answered from `litellm.Cache()`: the
    cached answer replayed as a stream and read to the end."""

    def kwargs(self) -> dict[str, Any]:
        return {
            "model": self.args.model,
            "messages": MESSAGES,
            "api_base": self.args.base_url,
            "api_key": API_KEY,
            "caching": True,
            "stream": True,
        }

    @staticmethod
    def text(chunks: list[Any]) -> str:
        return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)

    def replay(self) -> tuple[Any, list[Any]]:
        import litellm

        stream = litellm.completion(**self.kwargs())
        return stream, list(stream)

    def problem(self, stream: Any, chunks: list[Any]) -> str | None:
        """Why a replay is not the cached answer, or None."""
        if getattr(stream, "_hidden_params", {}).get("cache_hit") is not True:
            return f"not a cache hit: {getattr(stream, '_hidden_params', {})!r:.200}"
        if {chunk.id for chunk in chunks} != {self.first_id}:
            return f"chunk ids {sorted({chunk.id for chunk in chunks})!r:.200}, expected {self.first_id}"
        if self.text(chunks) != self.live_text:
            return f"text {self.text(chunks)!r:.200} differs from the streamed answer"
        return None

    def setup(self) -> dict[str, Any]:
        import litellm

        litellm.cache = litellm.Cache()
        stream, live = self.replay()  # the miss: streamed from the upstream, stored by LiteLLM once complete
        check(getattr(stream, "_hidden_params", {}).get("cache_hit") is not True, "the first stream should have been a miss")
        check(bool(live), "the first stream had no chunks")
        self.first_id = live[0].id
        self.live_text = self.text(live)
        # LiteLLM stores a streamed answer after the stream ends (in a logging thread): wait for the first hit
        for _ in range(50):
            stream, chunks = self.replay()
            if self.problem(stream, chunks) is None:
                break
            time.sleep(0.01)
        bad = self.problem(stream, chunks)
        check(bad is None, f"no cached replay after 50 streams: {bad}")
        self.replay_chunks = len(chunks)
        check(chunks[-1].choices[0].finish_reason == "stop", "the replay does not end with finish_reason 'stop'")
        self._timed(self.args.warmup)
        return {"first_id": self.first_id, "text": self.live_text, "live_chunks": len(live), "replay_chunks": len(chunks)}

    def _timed(self, n: int) -> list[int]:
        clock = time.perf_counter_ns
        samples = [0] * n
        bad: list[str] = []
        with gc_paused():
            for i in range(n):
                start = clock()
                stream, chunks = self.replay()
                samples[i] = clock() - start
                problem = self.problem(stream, chunks)
                if problem is not None:
                    bad.append(problem)
        check(not bad, f"{len(bad)} of {n} timed replays were not the cached answer, first: {bad[0] if bad else ''}")
        return samples

    def block(self) -> dict[str, Any]:
        return {"samples_ns": self._timed(self.args.calls)}


class AsyncHitsPerSecondWorkload(Workload):
    """Rounds of `asyncio.gather` of ``--tasks`` identical `litellm.acompletion(..., caching=True)`
    calls, all answered from `litellm.Cache()`; one block is ``--rounds`` rounds, each timed whole."""

    def kwargs(self) -> dict[str, Any]:
        return {
            "model": self.args.model,
            "messages": MESSAGES,
            "api_base": self.args.base_url,
            "api_key": API_KEY,
            "caching": True,
        }

    def setup(self) -> dict[str, Any]:
        import litellm

        litellm.cache = litellm.Cache()
        self.loop = asyncio.new_event_loop()
        first = self.loop.run_until_complete(litellm.acompletion(**self.kwargs()))
        check(not cache_hit(first), "the first call should have been a miss")
        self.first_id = first.id
        for _ in range(50):  # LiteLLM's async path stores the answer in a background task
            again = self.loop.run_until_complete(litellm.acompletion(**self.kwargs()))
            if cache_hit(again):
                break
            self.loop.run_until_complete(asyncio.sleep(0.01))
        check(cache_hit(again) and again.id == first.id, f"no cache hit after 50 calls (last: {again._hidden_params})")
        self.loop.run_until_complete(self._rounds(self.args.warmup))
        return {"first_id": first.id}

    async def _rounds(self, n: int) -> list[int]:
        import litellm

        kwargs = self.kwargs()
        tasks = self.args.tasks
        clock = time.perf_counter_ns
        samples = [0] * n
        bad: list[str] = []
        with gc_paused():
            for i in range(n):
                start = clock()
                results = await asyncio.gather(*(litellm.acompletion(**kwargs) for _ in range(tasks)))
                samples[i] = clock() - start
                bad += [
                    f"cache_hit={r._hidden_params.get('cache_hit')!r} id={r.id}"
                    for r in results
                    if not cache_hit(r) or r.id != self.first_id
                ]
        check(not bad, f"{len(bad)} of {n * tasks} calls were not cache hits on {self.first_id}, first: {bad[0] if bad else ''}")
        return samples

    def block(self) -> dict[str, Any]:
        return {"round_ns": self.loop.run_until_complete(self._rounds(self.args.rounds))}

    def close(self) -> None:
        loop = getattr(self, "loop", None)
        if loop is None:
            return
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:  # LiteLLM's background logging tasks
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()


class MemoryWorkload(Workload):
    """RSS that ``--entries`` distinct cached chat completions of ``--content-bytes`` characters take in
    LiteLLM's in-memory cache. One block stores them (`Cache.add_cache`, as LiteLLM's completion path
    does) in a `litellm.Cache()` whose entry cap is raised to ``--entries``; finish() stores them again
    in a `litellm.Cache()` left as it comes, to report how many of them that keeps."""

    def call_kwargs(self, i: int) -> dict[str, Any]:
        return {"model": self.args.model, "messages": [{"role": "user", "content": entry_prompt(i)}], "api_base": DEAD_BASE}

    def store(self, cache: Any, n: int, first: int = 0) -> float:
        template, size = self.template, self.args.content_bytes
        started = time.perf_counter()
        for i in range(first, first + n):
            template.choices[0].message.content = entry_text(i, size)  # a distinct answer for every entry
            cache.add_cache(template, **self.call_kwargs(i))
        return time.perf_counter() - started

    def setup(self) -> dict[str, Any]:
        import litellm

        litellm.cache = None
        size = self.args.content_bytes
        # a real ModelResponse, from LiteLLM's own completion path (mock_response: nothing is sent)
        self.template = litellm.completion(
            model=self.args.model,
            messages=[{"role": "user", "content": "Memory bench template"}],
            mock_response=entry_text(0, size),
        )
        check(type(self.template).__name__ == "ModelResponse", f"the template is a {type(self.template).__name__}")
        warm = litellm.Cache()  # first use of the add_cache path (imports, lazily built tables), then dropped
        self.store(warm, 100, first=10 * self.args.entries)
        check(len(warm.cache.cache_dict) == 100, "the warm-up entries were not stored")
        del warm
        return {"digest": entries_digest(self.args.entries, size)}

    def block(self) -> dict[str, Any]:
        import litellm

        n = self.args.entries
        cache = litellm.Cache()
        default_cap = cache.cache.max_size_in_memory
        cache.cache.max_size_in_memory = n  # else it keeps 200 (see finish)
        gc.collect()
        before, source = rss_bytes()
        seconds = self.store(cache, n)
        gc.collect()
        after, _ = rss_bytes()
        held = len(cache.cache.cache_dict)
        check(held == n, f"LiteLLM's cache holds {held} of the {n} entries stored")
        key = cache.get_cache_key(**self.call_kwargs(0))
        stored = cache.cache.cache_dict[key]
        stored_chars = len(stored["response"]) if isinstance(stored, dict) else len(str(stored))
        # every sampled entry answers a completion call with its own answer (a miss would fail: DEAD_BASE)
        litellm.cache = cache
        for i in sorted({0, 1, n // 2, n - 1, *range(0, n, max(1, n // 20))}):
            response = litellm.completion(caching=True, api_key=API_KEY, **self.call_kwargs(i))
            check(cache_hit(response), f"entry {i} was not a cache hit")
            content = response.choices[0].message.content
            check(content == entry_text(i, self.args.content_bytes), f"entry {i} answered {content[:40]!r}")
        litellm.cache = None
        return {
            "rss_before": before,
            "rss_after": after,
            "rss_source": source,
            "held": held,
            "seconds": seconds,
            "stored_chars": stored_chars,
            "default_cap": default_cap,
        }

    def finish(self) -> dict[str, Any]:
        import litellm

        cache = litellm.Cache()  # as it comes
        self.store(cache, self.args.entries)
        held = len(cache.cache.cache_dict)
        check(held <= self.args.entries, f"LiteLLM's default cache holds {held} entries")
        return {"default_held": held, "default_cap": cache.cache.max_size_in_memory}


class ProbeWorkload(Workload):
    """Import LiteLLM and report its version (the harness's availability check)."""

    def block(self) -> dict[str, Any]:
        return {}


WORKLOADS: dict[str, type[Workload]] = {
    "probe": ProbeWorkload,
    "import": ImportWorkload,
    "sync-hit": HitWorkload,
    "async-hit": AsyncHitWorkload,
    "hit-100kb-prompt": HitWorkload,
    "async-hits-per-second": AsyncHitsPerSecondWorkload,
    "disk-hit": DiskHitWorkload,
    "miss-overhead": MissOverheadWorkload,
    "concurrent-misses": ConcurrentMissesWorkload,
    "stream-hit": StreamHitWorkload,
    "redis-hit": RedisHitWorkload,
    "s3-hit": S3HitWorkload,
    "memory-per-entry": MemoryWorkload,
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
    parser.add_argument("--s3-endpoint", default="", help="an S3 server on 127.0.0.1, http://127.0.0.1:PORT (s3-hit)")
    parser.add_argument("--s3-bucket", default="", help="an existing bucket on that server (s3-hit)")
    parser.add_argument("--model", default="openai/gpt-4o-mini")
    parser.add_argument("--blocks", type=int, default=5, help="blocks to run when not --interleave")
    parser.add_argument("--calls", type=int, default=500, help="timed calls per block (hit workloads)")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up calls (per arm) or processes")
    parser.add_argument("--rounds", type=int, default=8, help="rounds per block (miss-overhead, async-hits-per-second)")
    parser.add_argument("--prompt-bytes", type=int, default=0, help="hit workloads: a user message of this many characters")
    parser.add_argument("--tasks", type=int, default=200, help="concurrent calls per round (async-hits-per-second)")
    parser.add_argument("--entries", type=int, default=100_000, help="entries to store (memory-per-entry)")
    parser.add_argument("--content-bytes", type=int, default=1024, help="characters per stored answer (memory-per-entry)")
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
        settle()
        emit("ready", version=version, import_s=import_s, **setup)
        for line in sys.stdin:
            command = line.strip()
            idle = idle_cpu_ns()
            if command == "block":
                block = workload.block()
                settle()
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
