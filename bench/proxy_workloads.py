"""Proxy workloads: `llmstash serve` (one uvicorn worker, in-memory cache) answering a cached chat
completion over loopback. The client is a minimal HTTP/1.1 keep-alive client on raw sockets, so
that the figures are the proxy's, not a heavy client library's; it runs in this process, the proxy
in a child process (one core each on a 2-core machine).

LiteLLM's twin is its own proxy (`litellm --config`, from the Python of LiteLLM's venv, with the
`proxy` extra) set up the same way: one uvicorn worker, its in-memory cache (``cache: true``,
``cache_params: {type: local}``), master-key auth, no database, an upstream of its own (a second
MockUpstream). It runs beside llmstash's proxy, and the two are timed by turns, block by block,
with the same client and the same loops."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

import httpx
import orjson

import twin
import workloads  # noqa: F401  (the library's workloads register first: the proxy rows come last in the table)
from common import (
    BenchError,
    Measurement,
    TwinResult,
    check,
    gc_paused,
    local_upstream,
    p50_p99_us,
    percentile,
    quietest,
    workload,
)
from llmstash.testing.proxy import ProxyProcess, free_port
from llmstash.testing.upstream import MockUpstream

MASTER_KEY = "sk-bench-master-key"
MODEL = "gpt-4o-mini"
BODY = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "In one sentence, what is a cache?"}]})
LATENCY_BLOCKS = 5
LATENCY_CALLS = 2_000
LATENCY_WARMUP = 500
RATE_BLOCKS = 5
RATE_CONNECTIONS = 16  # concurrent keep-alive connections ...
RATE_REQUESTS = 400  # ... each sending this many requests, one after the other, per block
RATE_WARMUP = 50
# LiteLLM's proxy answers a hit in milliseconds, not tenths of one: its blocks are shorter.
LITELLM_LATENCY_CALLS = 300
LITELLM_LATENCY_WARMUP = 100
LITELLM_RATE_REQUESTS = 50  # per connection and block, over the same RATE_CONNECTIONS connections
LITELLM_RATE_WARMUP = 10
LITELLM_START_TIMEOUT = 180.0  # its import and start take 10-20 s on a busy 2-core machine
LITELLM_ENV = {
    # Nothing may leave the machine: LiteLLM 1.106.2 fetches these catalogues from GitHub unless told
    # to use the copies it bundles (it has no telemetry: `--telemetry` is a no-op there).
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "DISABLE_SCHEMA_UPDATE": "True",  # no database here anyway (no DATABASE_URL): no Prisma migrations
    "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",
    "LITELLM_LOG": "WARNING",  # as `llmstash serve --log-level warning`: no access log line per request
    "NO_PROXY": "127.0.0.1,localhost",
}
T = TypeVar("T")
LITELLM_ENV_DROPPED = ("DATABASE_URL", "REDIS_HOST", "REDIS_URL", "LITELLM_MASTER_KEY")


@dataclass(frozen=True)
class _Server:
    """A proxy under test: its port, its PID (for its CPU time) and how its answers say "from the cache"."""

    port: int
    pid: int
    hit_marker: bytes
    miss_marker: bytes | None = None
    """What a miss's head carries (None: a miss is a 200 without ``hit_marker``)."""

    @property
    def request(self) -> bytes:
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nAuthorization: Bearer {MASTER_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
        )
        return head.encode() + BODY

    def is_hit(self, head: bytes) -> bool:
        return head.startswith(b"HTTP/1.1 200") and self.hit_marker in head

    def is_miss(self, head: bytes) -> bool:
        if not head.startswith(b"HTTP/1.1 200"):
            return False
        return self.hit_marker not in head if self.miss_marker is None else self.miss_marker in head


LLMSTASH_HIT, LLMSTASH_MISS = b"x-llmstash-cache: HIT", b"x-llmstash-cache: MISS"
LITELLM_HIT = b"\r\nx-litellm-cache-key: "  # LiteLLM's proxy sets this header only on answers from its cache


def _split_response(buffer: bytes) -> tuple[bytes, bytes, bytes] | None:
    """(head, body, rest) once a whole response with Content-Length is in ``buffer``."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buffer[:end]
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if len(buffer) < end + 4 + length:
        return None
    return head, buffer[end + 4 : end + 4 + length], buffer[end + 4 + length :]


def _cpu_ns(pid: int) -> int:
    """CPU time (user + system) used so far by process ``pid`` (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


@contextmanager
def _proxy() -> Iterator[ProxyProcess]:
    with local_upstream() as upstream, tempfile.TemporaryDirectory() as directory:
        config = {
            "model_list": [{"model_name": MODEL, "litellm_params": {"model": f"openai/{MODEL}", "api_base": upstream.base_url}}],
            "litellm_settings": {"cache": True, "cache_params": {"type": "local"}},
            "general_settings": {"master_key": MASTER_KEY},
        }
        path = Path(directory) / "config.yaml"
        path.write_text(orjson.dumps(config).decode())  # JSON is YAML
        with ProxyProcess(path) as proxy:
            yield proxy
        check(upstream.call_count() == 1, f"the upstream got {upstream.call_count()} calls; only the first should reach it")


def _llmstash_server(proxy: ProxyProcess) -> _Server:
    assert proxy.process is not None
    return _Server(proxy.port, proxy.process.pid, LLMSTASH_HIT, LLMSTASH_MISS)


class _LiteLLMProxy:
    """LiteLLM's proxy in a child process, with its own upstream; inert (``server`` None, ``failure``
    saying why) when LiteLLM is not configured or its proxy does not start. A failure of LiteLLM's
    side never stops llmstash's: the workload records it and stops timing LiteLLM."""

    def __init__(self) -> None:
        self.server: _Server | None = None
        self.failure: TwinResult | None = None
        self.upstream: MockUpstream | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.idle_cpu_ns = 0
        self.start_seconds = 0.0
        """CPU LiteLLM's proxy used while llmstash's was being timed."""
        self._log: IO[bytes] | None = None
        self._stack = ExitStack()

    @property
    def active(self) -> bool:
        return self.server is not None and self.failure is None

    def __enter__(self) -> _LiteLLMProxy:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        python = twin.CONFIG.python
        if python is None:
            self.failure = TwinResult("n/a", notes=f"LiteLLM not measured: {twin.CONFIG.reason}")
            return
        self.upstream = self._stack.enter_context(local_upstream())
        directory = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="litellm-proxy-bench-")))
        params = {"model": f"openai/{MODEL}", "api_base": self.upstream.base_url, "api_key": "sk-mock-upstream"}
        config = {
            "model_list": [{"model_name": MODEL, "litellm_params": params}],
            "litellm_settings": {"cache": True, "cache_params": {"type": "local"}},
            "general_settings": {"master_key": MASTER_KEY},
        }
        path = directory / "config.yaml"
        path.write_text(orjson.dumps(config).decode())
        port = free_port()
        command = [str(python), "-m", "litellm.proxy.proxy_cli", "--config", str(path)]
        command += ["--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
        env = {k: v for k, v in os.environ.items() if k not in LITELLM_ENV_DROPPED} | LITELLM_ENV
        self._log = (directory / "proxy.log").open("w+b")
        # cwd: a fresh directory, so that no project .env is loaded
        self.process = subprocess.Popen(command, cwd=directory, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        started = time.monotonic()
        while True:
            if self.process.poll() is not None:
                self.fail(f"LiteLLM's proxy exited with status {self.process.returncode} before answering")
                return
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=1.0, trust_env=False)
                if answer.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - started > LITELLM_START_TIMEOUT:
                self.fail(f"LiteLLM's proxy did not answer /health/liveliness within {LITELLM_START_TIMEOUT:g} s")
                return
            time.sleep(0.1)
        self.start_seconds = time.monotonic() - started
        self.server = _Server(port, self.process.pid, LITELLM_HIT)

    def __exit__(self, *exc: object) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
        self._stack.close()

    def fail(self, message: str) -> None:
        if self.failure is not None:
            return
        tail = self._log_tail()
        notes = f"LiteLLM run FAILED: {message}" + (f" (its proxy's output ends: {tail})" if tail else "")
        if "No module named" in tail:
            notes += "; `make bench-litellm-venv` recreates its venv with the `proxy` extra"
        self.failure = TwinResult("error", notes=notes)
        print(f"  LiteLLM's proxy FAILED: {message}", file=sys.stderr, flush=True)

    def run(self, measure: Callable[[], T]) -> T | None:
        """``measure()``, or None when LiteLLM's side is inert or failed (now or before)."""
        if not self.active:
            return None
        try:
            return measure()
        except (BenchError, OSError) as exc:
            self.fail(str(exc) or type(exc).__name__)
            return None

    def check_upstream(self) -> None:
        assert self.upstream is not None
        calls = self.upstream.call_count()
        check(calls == 1, f"LiteLLM's upstream got {calls} calls; only the first should reach it")

    def result(self, compute: Callable[[], TwinResult]) -> TwinResult | None:
        """The workload's LiteLLM result: the failure if any, else ``compute()`` (a BenchError is a failure)."""
        if self.failure is None:
            try:
                result = compute()
            except BenchError as exc:
                self.fail(str(exc))
            else:
                idle = f"; LiteLLM's proxy used {self.idle_cpu_ns / 1e6:,.0f} ms of CPU in all while llmstash's was timed"
                return dataclasses.replace(result, notes=result.notes + idle)
        return self.failure

    def _log_tail(self, lines: int = 3) -> str:
        if self._log is None:
            return ""
        try:
            self._log.seek(0)
            text = self._log.read().decode(errors="replace")
        except (OSError, ValueError):
            return ""
        kept = [line.strip() for line in text.splitlines() if line.strip()]
        return " / ".join(kept[-lines:])[-600:]


def _exchange(sock: socket.socket, request: bytes) -> tuple[bytes, bytes]:
    sock.sendall(request)
    buffer = b""
    while (parts := _split_response(buffer)) is None:
        data = sock.recv(65536)
        check(bool(data), "the proxy closed the connection")
        buffer += data
    return parts[0], parts[1]


def _store(server: _Server) -> None:
    """The miss that stores the answer, then a hit that must return the same answer (same id)."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        first_head, first = _exchange(sock, server.request)
        check(server.is_miss(first_head), f"the first request should have been a miss: {first_head[:200]!r}")
        second_head, second = _exchange(sock, server.request)
        check(server.is_hit(second_head), f"the second request should have been a hit: {second_head[:200]!r}")
        check(orjson.loads(second)["id"] == orjson.loads(first)["id"], "the hit did not return the stored answer")


def _connect(server: _Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _sequential(sock: socket.socket, server: _Server, n: int) -> list[int]:
    clock = time.perf_counter_ns
    request = server.request
    samples = [0] * n
    buffer = b""
    with gc_paused():
        for i in range(n):
            start = clock()
            sock.sendall(request)
            while (parts := _split_response(buffer)) is None:
                data = sock.recv(65536)
                check(bool(data), "the proxy closed the connection")
                buffer += data
            samples[i] = clock() - start
            head, _, buffer = parts
            check(server.is_hit(head), f"a timed request was not a hit: {head[:200]!r}")
    return samples


@workload("proxy-hit", twin=True)
def proxy_hit() -> Measurement:
    """A cached chat completion through `llmstash serve` (one worker, in-memory cache, master-key auth) over loopback: one keep-alive connection, request sent to full answer read; LiteLLM: its proxy, set up and timed the same way."""
    with _proxy() as proxy, _LiteLLMProxy() as litellm, ExitStack() as sockets:
        ours = _llmstash_server(proxy)
        _store(ours)
        sock = sockets.enter_context(_connect(ours))
        _sequential(sock, ours, LATENCY_WARMUP)
        theirs = litellm.server
        litellm_sock: socket.socket | None = None
        if theirs is not None:

            def warm() -> socket.socket:
                _store(theirs)
                warmed = sockets.enter_context(_connect(theirs))
                _sequential(warmed, theirs, LITELLM_LATENCY_WARMUP)
                return warmed

            litellm_sock = litellm.run(warm)
        blocks: list[list[int]] = []
        litellm_blocks: list[list[int]] = []
        our_idle_cpu_ns = 0
        for _ in range(LATENCY_BLOCKS):
            before = _cpu_ns(theirs.pid) if theirs is not None else 0
            blocks.append(_sequential(sock, ours, LATENCY_CALLS))
            if litellm.active and theirs is not None and litellm_sock is not None:
                litellm.idle_cpu_ns += _cpu_ns(theirs.pid) - before
                ours_before = _cpu_ns(ours.pid)
                block = litellm.run(lambda: _sequential(litellm_sock, theirs, LITELLM_LATENCY_CALLS))
                our_idle_cpu_ns += _cpu_ns(ours.pid) - ours_before
                if block is not None:
                    litellm_blocks.append(block)

        def litellm_result() -> TwinResult:
            check(len(litellm_blocks) == LATENCY_BLOCKS, f"LiteLLM ran {len(litellm_blocks)} of {LATENCY_BLOCKS} blocks")
            litellm.check_upstream()
            p50, p99 = p50_p99_us(quietest(litellm_blocks))
            all_p50, _ = p50_p99_us([ns for block in litellm_blocks for ns in block])
            notes = (
                f"its proxy (`litellm --config`, one uvicorn worker on uvloop with h11, in-memory cache, master key, no "
                f"database; started in {litellm.start_seconds:.0f} s), the same client: quietest of {LATENCY_BLOCKS} blocks "
                f"of {LITELLM_LATENCY_CALLS} requests, each right after one of llmstash's (p50 over all blocks "
                f"{all_p50 / 1000:.3f} ms); every answer checked to carry `x-litellm-cache-key` (LiteLLM sets it only on "
                f"cache hits), its upstream called once; llmstash's proxy used {our_idle_cpu_ns / 1e6:,.0f} ms of CPU "
                "while LiteLLM's was timed"
            )
            return TwinResult("ok", p50 / 1000, p99 / 1000, "ms", digits=3, notes=notes)

        litellm_outcome = litellm.result(litellm_result)
    p50, p99 = p50_p99_us(quietest(blocks))
    pooled, _ = p50_p99_us([ns for block in blocks for ns in block])
    notes = (
        f"quietest of {LATENCY_BLOCKS} blocks of {LATENCY_CALLS:,} requests on one keep-alive connection (raw socket client; "
        f"p50 over all blocks {pooled / 1000:.3f} ms); every answer checked to carry `x-llmstash-cache: HIT`; uvicorn with "
        "httptools and uvloop"
    )
    return Measurement(p50 / 1000, p99 / 1000, "ms", target=1.0, notes=notes, digits=3, litellm=litellm_outcome)


async def _connection_loop(server: _Server, n: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    request = server.request
    hits = 0
    buffer = b""
    try:
        for _ in range(n):
            writer.write(request)
            while (parts := _split_response(buffer)) is None:
                data = await reader.read(65536)
                check(bool(data), "the proxy closed the connection")
                buffer += data
            head, _, buffer = parts
            hits += server.is_hit(head)
    finally:
        writer.close()
    return hits


async def _rate_block(server: _Server, per_connection: int) -> float:
    """Hits per second over one block; every answer must have been a hit."""
    start = time.perf_counter()
    counts = await asyncio.gather(*(_connection_loop(server, per_connection) for _ in range(RATE_CONNECTIONS)))
    seconds = time.perf_counter() - start
    hits = sum(counts)
    check(hits == RATE_CONNECTIONS * per_connection, f"{RATE_CONNECTIONS * per_connection - hits} requests were not hits")
    return hits / seconds


@workload("proxy-hits-per-s", twin=True)
def proxy_hits_per_s() -> Measurement:
    """Cache hits per second (higher is better) through `llmstash serve` (one worker, in-memory cache): 16 keep-alive connections each sending 400 requests one after the other, per block; LiteLLM: its proxy, the same way (50 requests per connection and block)."""
    with _proxy() as proxy, _LiteLLMProxy() as litellm:
        ours = _llmstash_server(proxy)
        theirs = litellm.server
        _store(ours)
        if theirs is not None:
            litellm.run(lambda: _store(theirs))
        litellm_rates: list[float] = []
        our_idle_cpu_ns = 0

        async def litellm_block(per_connection: int) -> float | None:
            if not litellm.active or theirs is None:
                return None
            try:
                return await _rate_block(theirs, per_connection)
            except (BenchError, OSError) as exc:
                litellm.fail(str(exc) or type(exc).__name__)
                return None

        async def measure() -> list[float]:
            nonlocal our_idle_cpu_ns
            await _rate_block(ours, RATE_WARMUP)
            await litellm_block(LITELLM_RATE_WARMUP)
            rates = []
            for _ in range(RATE_BLOCKS):
                before = _cpu_ns(theirs.pid) if theirs is not None else 0
                rates.append(await _rate_block(ours, RATE_REQUESTS))
                if litellm.active and theirs is not None:
                    litellm.idle_cpu_ns += _cpu_ns(theirs.pid) - before
                    ours_before = _cpu_ns(ours.pid)
                    rate = await litellm_block(LITELLM_RATE_REQUESTS)
                    our_idle_cpu_ns += _cpu_ns(ours.pid) - ours_before
                    if rate is not None:
                        litellm_rates.append(rate)
            return rates

        with gc_paused():
            rates = asyncio.run(measure())

        def litellm_result() -> TwinResult:
            check(len(litellm_rates) == RATE_BLOCKS, f"LiteLLM ran {len(litellm_rates)} of {RATE_BLOCKS} blocks")
            litellm.check_upstream()
            notes = (
                f"its proxy (`litellm --config`, one uvicorn worker, in-memory cache), the same client: best of {RATE_BLOCKS} "
                f"blocks of {RATE_CONNECTIONS} connections x {LITELLM_RATE_REQUESTS} requests, each right after one of "
                f"llmstash's (median block {percentile(litellm_rates, 50):,.0f} hits/s; the p99 column is the slowest block); "
                "every answer checked to carry `x-litellm-cache-key`, its upstream called once; llmstash's proxy used "
                f"{our_idle_cpu_ns / 1e6:,.0f} ms of CPU while LiteLLM's was timed"
            )
            return TwinResult("ok", max(litellm_rates), min(litellm_rates), "hits/s", digits=0, notes=notes)

        litellm_outcome = litellm.result(litellm_result)
    best, worst = max(rates), min(rates)
    notes = (
        f"best of {RATE_BLOCKS} blocks of {RATE_CONNECTIONS} connections x {RATE_REQUESTS} requests (median block "
        f"{percentile(rates, 50):,.0f} hits/s; the p99 column is the slowest block); the client (asyncio, raw sockets) "
        "shares the 2-core machine with the proxy"
    )
    return Measurement(best, worst, "hits/s", target=3000, notes=notes, digits=0, higher_is_better=True, litellm=litellm_outcome)
