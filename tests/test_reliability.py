"""Reliability: faults survived (servers killed or stalled, entries damaged in place, a disk writer
SIGKILLed mid-write) and load held (threads and asyncio tasks on the in-process backends).

Every fault here is real: valkey-server processes started by the harness (or by the test, when it
kills or stalls them) and child processes killed with SIGKILL. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diskcache
import pytest
import redis

import llmstash
from llmstash import acompletion, aembedding, completion, embedding
from llmstash._core.envelope import decode
from llmstash.backends import storage_class
from llmstash.backends.memory import ENTRY_OVERHEAD, MemoryStorage
from llmstash.caching import Cache
from llmstash.testing import MockUpstream
from llmstash.testing.servers import ValkeyCluster, ValkeyServer
from llmstash.testing.upstream import vector_for

EMBED_MODEL = "openai/text-embedding-3-small"


# ----- helpers -------------------------------------------------------------------------------------


def question(n: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"reliability question {n}"}]


def answer_for(n: int) -> str:
    return f"answer number {n}"


def ask(n: int, **kwargs: Any) -> Any:
    """A completion answered in-process (mock_response): the content tells which request it answers."""
    return completion(model="openai/demo", messages=question(n), mock_response=answer_for(n), **kwargs)


async def aask(n: int, **kwargs: Any) -> Any:
    return await acompletion(model="openai/demo", messages=question(n), mock_response=answer_for(n), **kwargs)


def content(response: Any) -> str:
    return str(response.choices[0].message.content)


def wait_for_cluster_ok(cluster: ValkeyCluster, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            infos = [node.client().execute_command("CLUSTER", "INFO") for node in cluster.nodes]  # type: ignore[no-untyped-call]
            if all(b"cluster_state:ok" in info for info in infos):
                return
        except redis.exceptions.RedisError:
            pass
        assert time.monotonic() < deadline, "the cluster did not return to cluster_state:ok"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyCluster]:
    """A 3-node cluster of this module's own, whose nodes the tests kill and stall."""
    cluster = ValkeyCluster(tmp_path_factory.mktemp("own-cluster")).start()
    yield cluster
    cluster.stop()


@dataclass
class Target:
    """A Redis deployment to break: Cache options, and the server process to kill or stall
    (the standalone server, or one of the cluster's three primaries)."""

    options: dict[str, Any]
    victim: ValkeyServer


@pytest.fixture(params=["redis", "redis-cluster"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "redis":
        server = ValkeyServer(tmp_path).start()
        yield Target({"url": server.url}, server)
        server.stop()
        return
    cluster: ValkeyCluster = request.getfixturevalue("own_cluster")
    wait_for_cluster_ok(cluster)
    cluster.flush()
    yield Target({"redis_startup_nodes": cluster.startup_nodes}, cluster.nodes[0])
    victim = cluster.nodes[0]
    victim.resume()
    if victim.process is None:  # a test failed between kill and restart
        victim.start()
    wait_for_cluster_ok(cluster)


# ----- faults: the server killed during a 2,000-call run ------------------------------------------

RUN_CALLS = 2_000
KILL_AT = 400
GATE = 1_000  # calls past this wait for the restart, so that the run goes on well after it
DOWN_SECONDS = 1.0  # below the cluster's node timeout (2 s): a crash and a quick supervisor restart
PACE = 0.008  # seconds between one worker's calls: the run lasts ~2.5 s after the restart
KEYS = 40


class KillRun:
    """Four workers (three threads and one asyncio loop) share 2,000 numbered calls."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self._lock = threading.Lock()
        self._next = 0
        self.done = 0
        self.failures: list[str] = []
        self.durations: list[float] = []
        self.restarted = threading.Event()

    def ticket(self) -> int | None:
        with self._lock:
            if self._next >= RUN_CALLS:
                return None
            self._next += 1
            return self._next - 1

    def finished(self, n: int, started: float, result: Any, error: BaseException | None) -> None:
        with self._lock:
            self.done += 1
            self.durations.append(time.monotonic() - started)
            if error is not None:
                self.failures.append(f"call {n}: {type(error).__name__}: {error}")
            elif content(result) != answer_for(n % KEYS):
                self.failures.append(f"call {n}: wrong answer {content(result)!r}")

    def thread_worker(self) -> None:
        while (n := self.ticket()) is not None:
            if n >= GATE:
                self.restarted.wait(30)
            started = time.monotonic()
            try:
                result, error = ask(n % KEYS), None
            except Exception as exc:
                result, error = None, exc
            self.finished(n, started, result, error)
            time.sleep(PACE)

    def async_worker(self) -> None:
        async def loop() -> None:
            while (n := self.ticket()) is not None:
                if n >= GATE:
                    await asyncio.to_thread(self.restarted.wait, 30)
                started = time.monotonic()
                try:
                    result, error = await aask(n % KEYS), None
                except Exception as exc:
                    result, error = None, exc
                self.finished(n, started, result, error)
                await asyncio.sleep(PACE)

        asyncio.run(loop())


def test_server_killed_during_a_2000_call_run(target: Target) -> None:
    cache = Cache(type="redis", **target.options)
    llmstash.cache = cache
    run = KillRun(cache)
    workers = [threading.Thread(target=run.thread_worker) for _ in range(3)]
    workers.append(threading.Thread(target=run.async_worker))
    for worker in workers:
        worker.start()
    try:
        deadline = time.monotonic() + 30
        while run.done < KILL_AT:
            assert time.monotonic() < deadline, "the run stalled before the kill"
            time.sleep(0.005)
        hits_before_kill = cache.stats()["hits"]
        target.victim.kill()  # SIGKILL while calls are in flight
        time.sleep(DOWN_SECONDS)
        target.victim.restart()  # same port, empty
        restarted_at = time.monotonic()
        hits_at_restart = cache.stats()["hits"]
        run.restarted.set()
        resumed_after = None
        while time.monotonic() - restarted_at < 10 and any(worker.is_alive() for worker in workers):
            if cache.stats()["hits"] > hits_at_restart:  # a storage hit: Redis answers again
                resumed_after = time.monotonic() - restarted_at
                break
            time.sleep(0.005)
    finally:
        run.restarted.set()
        for worker in workers:
            worker.join(60)
    stats = cache.stats()
    assert run.failures == []
    assert run.done == RUN_CALLS
    assert hits_before_kill > 0  # the server served hits before it died
    assert stats["errors"] > 0  # and its death was noticed (and survived)
    assert resumed_after is not None and resumed_after < 2.0, f"hits resumed {resumed_after} s after the restart"
    assert max(run.durations) < 3.0, f"slowest call {max(run.durations):.2f} s"
    assert stats["hits"] + stats["misses"] == RUN_CALLS
    # and the restarted server itself takes entries again (a cluster primary refuses writes for
    # its first ~2 s back, by design of Redis Cluster)
    deadline = time.monotonic() + 6
    n = 0
    while not target.victim.client().keys("llmstash:*"):
        assert time.monotonic() < deadline, "nothing was stored in the restarted server"
        ask(KEYS + n)
        n += 1
        time.sleep(0.01)


# ----- faults: the server stalled (SIGSTOP) ------------------------------------------------------

PAUSE_SECONDS = 1.5  # below the cluster's node timeout: the cluster itself stays up
CALL_BOUND = 2.0  # a generous bound over the 0.5 s socket timeout (cluster: redis-py retries once)


def test_server_paused_calls_finish_in_bounded_time_and_succeed(target: Target) -> None:
    cache = Cache(type="redis", **target.options)
    llmstash.cache = cache
    for n in range(KEYS):
        ask(n)
    assert all(ask(n)._hidden_params["cache_hit"] for n in range(KEYS))

    durations: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def record(n: int, started: float, result: Any, error: BaseException | None) -> None:
        with lock:
            durations.append(time.monotonic() - started)
            if error is not None:
                failures.append(f"{type(error).__name__}: {error}")
            elif content(result) != answer_for(n):
                failures.append(f"wrong answer {content(result)!r}")

    def thread_worker(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            n = rng.randrange(KEYS * 2)  # cached questions and new ones
            started = time.monotonic()
            try:
                result, error = ask(n), None
            except Exception as exc:
                result, error = None, exc
            record(n, started, result, error)

    async def burst() -> list[Any]:
        async def one(n: int) -> Any:
            started = time.monotonic()
            result = await aask(n)
            return n, result, time.monotonic() - started

        return await asyncio.gather(*(one(n) for n in range(50)), return_exceptions=True)

    target.victim.pause()
    try:
        threads = [threading.Thread(target=thread_worker, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        burst_started = time.monotonic()
        outcomes = asyncio.run(burst())
        burst_seconds = time.monotonic() - burst_started
        time.sleep(max(0.0, PAUSE_SECONDS - burst_seconds))
        stop.set()
        for thread in threads:
            thread.join(30)
    finally:
        target.victim.resume()

    for outcome in outcomes:
        assert not isinstance(outcome, BaseException), repr(outcome)
        n, result, seconds = outcome
        assert content(result) == answer_for(n)
        durations.append(seconds)
    assert failures == []
    assert len(durations) > 50
    assert max(durations) < CALL_BOUND, f"slowest call {max(durations):.2f} s"
    assert burst_seconds < CALL_BOUND + 1.0
    assert cache.stats()["errors"] > 0  # the stall was noticed

    # nothing was lost: every entry stored before the stall is served again, on every node
    deadline = time.monotonic() + 5
    while not all(ask(n)._hidden_params["cache_hit"] for n in range(KEYS)):
        assert time.monotonic() < deadline, "not every entry was a hit within 5 s of the resume"
        time.sleep(0.05)


def test_a_lock_left_behind_by_a_stall_does_not_hold_later_calls(tmp_path: Path) -> None:
    """The leader takes the key's single-flight lock, then Redis stalls: the answer's write and the
    lock's release both fail. Once Redis answers again the next identical call must not wait out
    the lock's expiry (up to 120 s, or its own timeout and then llmstash.Timeout)."""
    server = ValkeyServer(tmp_path).start()
    raw = server.client()
    try:
        with MockUpstream(delay=0.6) as slow:
            cache = Cache(type="redis", url=server.url)
            llmstash.cache = cache
            kwargs = dict(model="openai/demo", messages=question(7), api_base=slow.base_url, timeout=5)
            outcome: list[Any] = []
            leader = threading.Thread(target=lambda: outcome.append(completion(**kwargs)))
            leader.start()
            deadline = time.monotonic() + 10
            while not raw.keys("llmstash-lock:*"):  # the leader holds the lock; the upstream is slow
                assert time.monotonic() < deadline, "the leader never took the lock"
                time.sleep(0.005)
            server.pause()
            try:
                leader.join(10)
            finally:
                server.resume()
            assert outcome and outcome[0]._hidden_params["cache_hit"] is False
            assert raw.keys("llmstash-lock:*"), "precondition: the lock was left behind"
            # the answer's SET may still land after the resume (it waited in the socket buffer);
            # remove it, as when a write is lost, so that the next call has to go upstream
            raw.delete(*raw.keys("llmstash:*"))
            time.sleep(0.6)  # past the 0.5 s in which the backend skips Redis after a failure

            started = time.monotonic()
            again = completion(**kwargs)
            assert time.monotonic() - started < 2.0
            assert again._hidden_params["cache_hit"] is False
            assert raw.keys("llmstash-lock:*") == []  # released, and this call's own lock too
            assert completion(**kwargs)._hidden_params["cache_hit"] is True
            assert slow.call_count("chat/completions") == 2
    finally:
        server.stop()


# ----- faults: entries damaged in place -------------------------------------------------------------


def _random_bytes(raw: bytes) -> bytes:
    return b"\x00" + random.Random(len(raw)).randbytes(max(16, len(raw) - 1))


CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    "random-bytes": _random_bytes,
    "truncated": lambda raw: raw[: len(raw) // 2],
    "future-version": lambda raw: raw[:2] + bytes([raw[2] + 1]) + raw[3:],
}


class RawDisk:
    """Direct access to a disk cache's SQLite rows and value files, behind diskcache's back."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.directory / "cache.db", timeout=10, isolation_level=None)

    def keys(self) -> list[str]:
        with contextlib.closing(self._db()) as db:
            return [row[0] for row in db.execute("SELECT key FROM Cache WHERE raw = 1")]

    def get(self, key: str) -> bytes | None:
        with contextlib.closing(self._db()) as db:
            row = db.execute("SELECT filename, value FROM Cache WHERE key = ? AND raw = 1", (key,)).fetchone()
        if row is None:
            return None
        filename, value = row
        return (self.directory / filename).read_bytes() if filename else bytes(value)

    def put(self, key: str, data: bytes) -> None:
        """Overwrite the stored bytes in place: the value file, or the row's value column."""
        with contextlib.closing(self._db()) as db:
            filename, _ = db.execute("SELECT filename, value FROM Cache WHERE key = ? AND raw = 1", (key,)).fetchone()
            if filename:
                (self.directory / filename).write_bytes(data)
            else:
                db.execute("UPDATE Cache SET value = ? WHERE key = ? AND raw = 1", (data, key))


@dataclass
class Store:
    options: dict[str, Any]
    keys: Callable[[], list[str]]
    get: Callable[[str], bytes | None]
    put: Callable[[str, bytes], None]
    file_backed: Callable[[], int] = lambda: 0


OBJECT_STORES = {"s3": "s3_options", "gcs": "gcs_options", "azure-blob": "azure_options"}


@pytest.fixture(params=["disk", "redis", "redis-cluster", *OBJECT_STORES])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param in OBJECT_STORES:  # the raw side: a second backend on the same bucket
        options = {"type": request.param, **request.getfixturevalue(OBJECT_STORES[request.param])}
        raw = storage_class(request.param).from_options({k: v for k, v in options.items() if k != "type"}, time.time)
        yield Store(options, lambda: sorted(raw.keys()), raw.get, lambda key, data: raw.set(key, data, None))
        raw.close()
        return
    if request.param == "disk":
        directory = tmp_path / "disk"
        raw_disk = RawDisk(directory)

        def file_backed() -> int:
            with contextlib.closing(raw_disk._db()) as db:
                return int(db.execute("SELECT count(*) FROM Cache WHERE filename IS NOT NULL").fetchone()[0])

        yield Store({"type": "disk", "disk_cache_dir": str(directory)}, raw_disk.keys, raw_disk.get, raw_disk.put, file_backed)
        return
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        client: Any = redis.Redis.from_url(url)
        options: dict[str, Any] = {"type": "redis", "url": url}
    else:
        nodes = request.getfixturevalue("cluster_nodes")
        client = redis.cluster.RedisCluster(startup_nodes=[redis.cluster.ClusterNode(n["host"], n["port"]) for n in nodes])
        options = {"type": "redis", "redis_startup_nodes": nodes}

    def redis_keys() -> list[str]:
        names = client.keys("llmstash:*", target_nodes="all") if request.param == "redis-cluster" else client.keys("llmstash:*")
        return [name.decode()[len("llmstash:") :] for name in names]

    yield Store(
        options,
        redis_keys,
        lambda key: client.get("llmstash:" + key),
        lambda key, data: client.set("llmstash:" + key, data, keepttl=True),
    )
    client.close()


@pytest.mark.parametrize("damage", sorted(CORRUPTIONS))
def test_entries_damaged_in_place_are_misses_and_removed(store: Store, damage: str, upstream: MockUpstream) -> None:
    cache = Cache(**store.options)
    llmstash.cache = cache
    big = "R" * 40_000  # a disk entry this big lives in a file of its own, not in SQLite
    chat = dict(model="openai/demo", messages=question(1), mock_response=big)
    small = dict(model="openai/demo", messages=question(2), mock_response=answer_for(2))
    texts = ["damaged item one", "damaged item two", "damaged item three"]
    embed = dict(model=EMBED_MODEL, input=texts, api_base=upstream.base_url)
    completion(**chat)
    asyncio.run(acompletion(**small))
    first_vectors = embedding(**embed).model_dump()["data"]
    cache.add_cache({"stored": "directly"}, cache_key="direct-entry")
    keys = store.keys()
    assert len(keys) == 6
    assert store.file_backed() == (1 if store.options["type"] == "disk" else 0)  # the chat answer's file

    for key in keys:
        raw = store.get(key)
        assert raw is not None and decode(raw)
        store.put(key, CORRUPTIONS[damage](raw))

    no_store = {"cache": {"no-store": True}}  # so that the removal stays observable
    again = completion(**chat, **no_store)
    assert again._hidden_params["cache_hit"] is False and content(again) == big
    again_small = asyncio.run(acompletion(**small, **no_store))
    assert again_small._hidden_params["cache_hit"] is False and content(again_small) == answer_for(2)
    batch = embedding(**embed, **no_store)
    assert batch._hidden_params["cached_items"] == 0
    assert batch.model_dump()["data"] == first_vectors
    assert cache.get_cache(cache_key="direct-entry") is None

    assert store.keys() == []  # every damaged entry was removed
    stats = cache.stats()
    assert (stats["corrupt"], stats["errors"]) == (6, 0)
    assert upstream.call_count("embeddings") == 2

    # and the cache heals: the next answers are stored and served again
    completion(**chat)
    assert completion(**chat)._hidden_params["cache_hit"] is True
    embedding(**embed)
    assert embedding(**embed)._hidden_params["cache_hit"] is True


# ----- faults: a disk writer killed with SIGKILL ---------------------------------------------------

WRITER = """
import os, sys, threading
import llmstash
from llmstash.caching import Cache

directory, first = sys.argv[1], int(sys.argv[2])
llmstash.cache = Cache(type="disk", disk_cache_dir=directory)
out = os.fdopen(1, "w", buffering=1)
report = threading.Lock()

def write(start, step):
    n = start
    while True:
        # every 5th answer is big enough to live in a file of its own
        text = "answer %d " % n + ("x" * 40_000 if n % 5 == 0 else "")
        response = llmstash.completion(model="openai/demo", messages=[{"role": "user", "content": "kill test %d" % n}],
                                       mock_response=text)
        llmstash.cache.add_cache({"n": n, "id": response.id}, cache_key="direct-%d" % n)
        with report:  # both writes have returned: committed
            out.write("%d %s\\n" % (n, response.id))
        n += step

threads = [threading.Thread(target=write, args=(first + t, 2), daemon=True) for t in range(2)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
"""


def test_disk_writer_killed_mid_run_loses_no_committed_entry(tmp_path: Path) -> None:
    directory = tmp_path / "disk"
    committed: dict[int, str] = {}
    for round_ in range(3):  # three writers in turn, each SIGKILLed mid-write, on the same directory
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(directory), str(round_ * 100_000)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert child.stdout is not None
            reported = 0
            deadline = time.monotonic() + 30
            target = random.Random(round_).randrange(150, 300)
            while reported < target:
                line = child.stdout.readline()
                assert line, child.stderr.read().decode() if child.stderr else "the writer died"
                assert time.monotonic() < deadline
                n, response_id = line.split()
                committed[int(n)] = response_id.decode()
                reported += 1
            child.send_signal(signal.SIGKILL)  # while both threads are writing
            child.wait(10)
            rest = child.stdout.read()
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            for stream in (child.stdout, child.stderr):
                if stream is not None:
                    stream.close()
        assert child.returncode == -signal.SIGKILL
        for line in rest.split(b"\n")[:-1]:  # whole lines only: a line cut by the kill is not a report
            if line.strip():
                n, response_id = line.split()
                committed[int(n)] = response_id.decode()

        # the directory reopens and serves every entry the writers reported as committed
        with contextlib.closing(sqlite3.connect(directory / "cache.db")) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        cache = Cache(type="disk", disk_cache_dir=str(directory))
        llmstash.cache = cache
        for n, response_id in committed.items():
            text = f"answer {n} " + ("x" * 40_000 if n % 5 == 0 else "")
            messages = [{"role": "user", "content": f"kill test {n}"}]
            response = completion(model="openai/demo", messages=messages, mock_response=text)
            assert response._hidden_params["cache_hit"] is True, n
            assert response.id == response_id and content(response) == text
            assert cache.get_cache(cache_key=f"direct-{n}") == {"n": n, "id": response_id}
        stats = cache.stats()
        assert (stats["errors"], stats["corrupt"], stats["misses"]) == (0, 0, 0)
        cache.add_cache("still writable", cache_key="after-the-kill")  # no lock was left behind
        assert cache.get_cache(cache_key="after-the-kill") == "still writable"
        cache.close()
        llmstash.cache = None
    assert len(committed) >= 450


# ----- load: threads and asyncio tasks on the in-process backends ----------------------------------


class Tally:
    """What the workload saw, to check that the cache's counters add up."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.errors: list[str] = []
        self.chat_hit = self.chat_miss = 0
        self.items_total = self.items_cached = self.fresh_batches = 0
        self.got = self.got_none = 0
        self.adds = 0

    def chat(self, response: Any, n: int) -> None:
        with self.lock:
            if content(response) != answer_for(n):
                self.errors.append(f"chat {n}: wrong answer {content(response)!r}")
            if response._hidden_params["cache_hit"]:
                self.chat_hit += 1
            else:
                self.chat_miss += 1

    def batch(self, response: Any, texts: list[str]) -> None:
        hidden = response._hidden_params
        vectors = [item["embedding"] for item in response.model_dump()["data"]]
        with self.lock:
            if vectors != [vector_for(text, 8) for text in texts]:
                self.errors.append(f"embedding {texts}: wrong vectors")
            self.items_total += hidden["total_items"]
            self.items_cached += hidden["cached_items"]
            self.fresh_batches += not hidden["cache_hit"]

    def get(self, value: Any, k: int) -> None:
        with self.lock:
            if value is None:
                self.got_none += 1
            else:
                self.got += 1
                if value.get("k") != k:
                    self.errors.append(f"direct {k}: wrong value {str(value)[:60]}")

    def added(self) -> None:
        with self.lock:
            self.adds += 1

    def failed(self, exc: BaseException) -> None:
        with self.lock:
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def check(self, cache: Cache, upstream: MockUpstream | None = None) -> dict[str, int]:
        """The counters match what the callers saw; a coalesced call missed the storage but was
        answered by an identical call in flight (so it reads as a hit to its caller)."""
        assert self.errors == []
        stats = cache.stats()
        coalesced = stats["coalesced"]
        reads = self.chat_hit + self.chat_miss + self.items_total + self.got + self.got_none
        assert stats["hits"] + stats["misses"] == reads
        assert stats["hits"] == self.chat_hit - coalesced + self.items_cached + self.got
        assert stats["misses"] == self.chat_miss + coalesced + (self.items_total - self.items_cached) + self.got_none
        assert stats["writes"] == self.chat_miss + self.fresh_batches + self.adds
        assert (stats["errors"], stats["corrupt"], stats["oversized"]) == (0, 0, 0)
        if upstream is not None:
            assert upstream.call_count("embeddings") == self.fresh_batches
        return stats


def mixed_operation(cache: Cache, tally: Tally, rng: random.Random, upstream: MockUpstream, texts: list[str]) -> None:
    op = rng.random()
    if op < 0.40:  # a completion (answered in-process)
        n = rng.randrange(400)
        tally.chat(ask(n), n)
    elif op < 0.55:  # an embedding batch of 1-3 items, some cached
        batch = rng.sample(texts, rng.randint(1, 3))
        tally.batch(embedding(model=EMBED_MODEL, input=batch, api_base=upstream.base_url), batch)
    elif op < 0.75:  # add
        k = rng.randrange(300)
        cache.add_cache({"k": k, "pad": "p" * rng.randrange(2_000)}, cache_key=f"direct-{k}")
        tally.added()
    elif op < 0.95:  # get
        k = rng.randrange(300)
        tally.get(cache.get_cache(cache_key=f"direct-{k}"), k)
    else:  # delete
        cache.delete_cache(f"direct-{rng.randrange(300)}")


def run_threads(cache: Cache, upstream: MockUpstream, threads_n: int, ops: int, monitor: Callable[[], None] | None) -> Tally:
    tally = Tally()
    texts = [f"load text {i}" for i in range(80)]
    barrier = threading.Barrier(threads_n)
    stop = threading.Event()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        barrier.wait()
        for _ in range(ops):
            try:
                mixed_operation(cache, tally, rng, upstream, texts)
            except Exception as exc:
                tally.failed(exc)

    def watch() -> None:
        while not stop.is_set() and monitor is not None:
            try:
                monitor()
            except AssertionError as exc:
                tally.failed(exc)
                return
            time.sleep(0.002)

    workers = [threading.Thread(target=worker, args=(seed,)) for seed in range(threads_n)]
    watcher = threading.Thread(target=watch)
    watcher.start()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(120)
    stop.set()
    watcher.join(10)
    assert not any(thread.is_alive() for thread in workers), "the workload did not finish"
    return tally


def memory_charge(storage: MemoryStorage) -> int:
    return sum(len(key) + len(value) + ENTRY_OVERHEAD for key, (value, _) in storage._entries.items())


def test_threads_mixed_load_on_memory_holds_its_bounds_and_counts(upstream: MockUpstream) -> None:
    max_entries, max_bytes = 500, 400_000  # small, so that both bounds evict during the run
    cache = Cache(max_size_in_memory=max_entries, max_memory_bytes=max_bytes)
    llmstash.cache = cache
    storage = cache.storage
    assert isinstance(storage, MemoryStorage)

    def bounds_hold() -> None:
        with storage._lock:  # a consistent view, between two operations
            assert len(storage._entries) <= max_entries
            assert storage._bytes <= max_bytes

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)  # frequent thread switches
    try:
        tally = run_threads(cache, upstream, threads_n=8, ops=5_000, monitor=bounds_hold)
    finally:
        sys.setswitchinterval(old_interval)
    stats = tally.check(cache, upstream)
    assert tally.chat_hit + tally.chat_miss > 10_000
    assert tally.chat_hit > 0 and tally.chat_miss > 400  # evictions made some misses again
    assert len(storage) <= max_entries
    assert storage.size_bytes <= max_bytes
    assert storage.size_bytes == memory_charge(storage)
    assert len(set(storage.keys())) == len(storage)
    assert stats["hits"] > 0


def test_threads_mixed_load_on_disk_holds_its_bound_and_counts(upstream: MockUpstream, tmp_path: Path) -> None:
    # 8 x 2,000 operations, not 5,000: with the byte bound culling, every disk write is an SQLite
    # transaction plus a cull, taken in turn by the eight threads; 5,000 each took ~18 s on 2 cores.
    max_bytes = 300_000  # below what the run stores, so that diskcache has to cull
    cache = Cache(type="disk", disk_cache_dir=str(tmp_path / "disk"), max_disk_bytes=max_bytes)
    llmstash.cache = cache
    tally = run_threads(cache, upstream, threads_n=8, ops=2_000, monitor=None)
    tally.check(cache, upstream)
    assert tally.chat_miss > 400  # culled entries were asked for again
    db = diskcache.Cache(str(tmp_path / "disk"))
    try:
        # diskcache's volume: the SQLite pages plus the value files; culled on every write past the limit
        assert db.volume() <= max_bytes * 1.1
        assert len(db) < 400 + 300 + 80  # fewer entries than distinct keys written: the bound culled
    finally:
        db.close()


@pytest.mark.parametrize("backend", ["local", "disk"])
def test_500_concurrent_async_calls(backend: str, tmp_path: Path) -> None:
    options: dict[str, Any] = {"disk_cache_dir": str(tmp_path / "disk")} if backend == "disk" else {}
    cache = Cache(type=backend, **options)
    llmstash.cache = cache
    tally = Tally()
    texts = [f"async load text {i}" for i in range(40)]
    prompts = 30

    with MockUpstream(delay=0.05) as slow:  # slow enough that identical calls overlap

        async def chat(n: int) -> None:
            response = await acompletion(model="openai/demo", messages=question(n), api_base=slow.base_url)
            with tally.lock:
                if content(response) != f"Here is a careful answer about: reliability question {n}":
                    tally.errors.append(f"chat {n}: wrong answer")
                tally.chat_hit += response._hidden_params["cache_hit"]
                tally.chat_miss += not response._hidden_params["cache_hit"]

        async def batch(rng: random.Random) -> None:
            items = rng.sample(texts, rng.randint(1, 4))
            tally.batch(await aembedding(model=EMBED_MODEL, input=items, api_base=slow.base_url), items)

        async def add(k: int) -> None:
            await cache.async_add_cache({"k": k}, cache_key=f"direct-{k}")
            tally.added()

        async def get(k: int) -> None:
            tally.get(await cache.async_get_cache(cache_key=f"direct-{k}"), k)

        async def scenario() -> list[Any]:
            rng = random.Random(500)
            calls: list[Any] = []
            for _ in range(500):
                op = rng.random()
                if op < 0.6:
                    calls.append(chat(rng.randrange(prompts)))
                elif op < 0.8:
                    calls.append(batch(rng))
                elif op < 0.9:
                    calls.append(add(rng.randrange(50)))
                else:
                    calls.append(get(rng.randrange(50)))
            return await asyncio.gather(*calls, return_exceptions=True)

        started = time.monotonic()
        outcomes = asyncio.run(scenario())
        seconds = time.monotonic() - started
        failures = [repr(outcome) for outcome in outcomes if isinstance(outcome, BaseException)]
        assert failures == []
        stats = tally.check(cache)
        # single flight: one upstream call per distinct prompt, however many asked at once
        assert slow.call_count("chat/completions") == tally.chat_miss == prompts
        assert stats["coalesced"] > 0
        assert slow.call_count("embeddings") == tally.fresh_batches
    assert len(outcomes) == 500
    assert seconds < 30
