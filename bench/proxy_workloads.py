"""Proxy workloads: `llmstash serve` (one uvicorn worker, in-memory cache) answering a cached chat
completion over loopback. The client is a minimal HTTP/1.1 keep-alive client on raw sockets, so
that the figures are the proxy's, not a heavy client library's; it runs in this process, the proxy
in a child process (one core each on a 2-core machine)."""

from __future__ import annotations

import asyncio
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson

import workloads  # noqa: F401  (the library's workloads register first: the proxy rows come last in the table)
from common import Measurement, check, gc_paused, local_upstream, p50_p99_us, percentile, quietest, workload
from llmstash.testing.proxy import ProxyProcess

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


def _request(port: int) -> bytes:
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {MASTER_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    )
    return head.encode() + BODY


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


def _is_hit(head: bytes) -> bool:
    return head.startswith(b"HTTP/1.1 200") and b"x-llmstash-cache: HIT" in head


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


def _sequential(sock: socket.socket, request: bytes, n: int) -> list[int]:
    clock = time.perf_counter_ns
    samples = [0] * n
    buffer = b""
    with gc_paused():
        for i in range(n):
            start = clock()
            sock.sendall(request)
            while (parts := _split_response(buffer)) is None:
                buffer += sock.recv(65536)
            samples[i] = clock() - start
            head, _, buffer = parts
            check(_is_hit(head), f"a timed request was not a hit: {head[:200]!r}")
    return samples


@workload("proxy-hit")
def proxy_hit() -> Measurement:
    """A cached chat completion through `llmstash serve` (one worker, in-memory cache, master-key auth) over loopback: one keep-alive connection, request sent to full answer read."""
    with _proxy() as proxy, socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = _request(proxy.port)
        sock.sendall(request)  # the miss that stores the answer
        buffer = b""
        while (parts := _split_response(buffer)) is None:
            buffer += sock.recv(65536)
        check(b"x-llmstash-cache: MISS" in parts[0], "the first request should have been a miss")
        _sequential(sock, request, LATENCY_WARMUP)
        blocks = [_sequential(sock, request, LATENCY_CALLS) for _ in range(LATENCY_BLOCKS)]
    p50, p99 = p50_p99_us(quietest(blocks))
    pooled, _ = p50_p99_us([ns for block in blocks for ns in block])
    notes = (
        f"quietest of {LATENCY_BLOCKS} blocks of {LATENCY_CALLS:,} requests on one keep-alive connection (raw socket client; "
        f"p50 over all blocks {pooled / 1000:.3f} ms); every answer checked to carry `x-llmstash-cache: HIT`; uvicorn with "
        "httptools and uvloop. No LiteLLM column: LiteLLM's proxy needs its `proxy` extra (uvicorn, backoff, apscheduler, ...), "
        "which the pinned `.venv-litellm` does not have, so it does not start there"
    )
    return Measurement(p50 / 1000, p99 / 1000, "ms", target=1.0, notes=notes, digits=3)


async def _connection_loop(port: int, request: bytes, n: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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
            hits += _is_hit(head)
    finally:
        writer.close()
    return hits


async def _rate_block(port: int, request: bytes, per_connection: int) -> tuple[float, int]:
    start = time.perf_counter()
    counts = await asyncio.gather(*(_connection_loop(port, request, per_connection) for _ in range(RATE_CONNECTIONS)))
    return time.perf_counter() - start, sum(counts)


@workload("proxy-hits-per-s")
def proxy_hits_per_s() -> Measurement:
    """Cache hits per second (higher is better) through `llmstash serve` (one worker, in-memory cache): 16 keep-alive connections each sending 400 requests one after the other, per block."""
    with _proxy() as proxy:
        request = _request(proxy.port)

        async def measure() -> list[float]:
            await _connection_loop(proxy.port, request, 1)  # the miss
            await _rate_block(proxy.port, request, RATE_WARMUP)
            rates = []
            for _ in range(RATE_BLOCKS):
                seconds, hits = await _rate_block(proxy.port, request, RATE_REQUESTS)
                check(
                    hits == RATE_CONNECTIONS * RATE_REQUESTS, f"{RATE_CONNECTIONS * RATE_REQUESTS - hits} requests were not hits"
                )
                rates.append(hits / seconds)
            return rates

        with gc_paused():
            rates = asyncio.run(measure())
    best, worst = max(rates), min(rates)
    notes = (
        f"best of {RATE_BLOCKS} blocks of {RATE_CONNECTIONS} connections x {RATE_REQUESTS} requests (median block "
        f"{percentile(rates, 50):,.0f} hits/s; the p99 column is the slowest block); the client (asyncio, raw sockets) "
        "shares the 2-core machine with the proxy"
    )
    return Measurement(best, worst, "hits/s", target=3000, notes=notes, digits=0, higher_is_better=True)
