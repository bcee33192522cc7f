"""Single flight: concurrent identical misses make one upstream call, from threads and from
asyncio tasks, streamed or not; a failed or abandoned leader hands over to a waiter; nobody waits
past the call's timeout; different keys and no-cache calls are not coalesced."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import llmstash
from llmstash import _upstream
from llmstash.caching import Cache
from llmstash.testing import MockUpstream
from llmstash.testing.upstream import reply_text

PROMPT = "What is single flight?"
MSGS = [{"role": "user", "content": PROMPT}]
REPLY = reply_text(PROMPT)
N = 32


def hit(obj: Any) -> bool:
    return obj._hidden_params["cache_hit"]


def chat(server: MockUpstream, prompt: str = PROMPT, **extra: Any) -> dict[str, Any]:
    return {
        "model": "openai/demo",
        "messages": [{"role": "user", "content": prompt}],
        "api_base": server.base_url,
        "timeout": 10,
        **extra,
    }


@pytest.fixture
def slow() -> Iterator[MockUpstream]:
    with MockUpstream(delay=0.3) as server:
        yield server


def run_together(n: int, fn: Callable[[int], Any], join_timeout: float = 20) -> list[tuple[str, Any]]:
    """Call ``fn(i)`` from ``n`` threads released at once; ("ok", result) or ("error", exception)."""
    barrier = threading.Barrier(n)
    results: list[tuple[str, Any]] = [("missing", None)] * n

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = ("ok", fn(i))
        except Exception as exc:
            results[i] = ("error", exc)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    end = time.monotonic() + join_timeout
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "a caller is still waiting"
    return results


def wait_for(condition: Callable[[], bool], seconds: float = 5) -> None:
    """Poll until ``condition()`` holds (test synchronisation, not a timing assertion)."""
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "condition never held"
        time.sleep(0.005)


def read_stream(stream: Any) -> tuple[bool, str, str]:
    """(cache_hit, id, content) of a whole chat stream."""
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    ids = {c.id for c in chunks}
    assert len(ids) == 1
    assert all(hit(c) == hit(stream) for c in chunks)
    return hit(stream), ids.pop(), content


async def aread_stream(stream: Any) -> tuple[bool, str, str]:
    chunks = [c async for c in stream]
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    ids = {c.id for c in chunks}
    assert len(ids) == 1
    return hit(stream), ids.pop(), content


# ----- threads ------------------------------------------------------------------------------------


def test_concurrent_identical_misses_make_one_upstream_call(slow):
    llmstash.cache = cache = Cache()
    results = run_together(N, lambda i: llmstash.completion(**chat(slow)))
    assert all(kind == "ok" for kind, _ in results)
    answers = [r for _, r in results]
    assert slow.call_count("chat/completions") == 1
    assert len({a.id for a in answers}) == 1
    assert all(a.choices[0].message.content == REPLY for a in answers)
    assert sorted(hit(a) for a in answers) == [False] + [True] * (N - 1)
    stats = cache.stats()
    assert stats["coalesced"] == N - 1
    assert (stats["hits"], stats["misses"], stats["writes"]) == (0, N, 1)
    assert stats["hit_rate"] == (N - 1) / N
    # the answer was stored: a later call is an ordinary hit
    later = llmstash.completion(**chat(slow))
    assert hit(later) and later.id == answers[0].id
    assert slow.call_count("chat/completions") == 1


def test_every_waiter_gets_its_own_copy(slow):
    llmstash.cache = Cache()
    answers = [r for _, r in run_together(8, lambda i: llmstash.completion(**chat(slow)))]
    answers[0].choices[0].message.content = "changed by one caller"
    assert all(a.choices[0].message.content == REPLY for a in answers[1:])


def test_text_completions_coalesce(slow):
    llmstash.cache = cache = Cache()
    text = run_together(
        10, lambda i: llmstash.text_completion(model="gpt-3.5-turbo-instruct", prompt=PROMPT, api_base=slow.base_url)
    )
    assert slow.call_count("/v1/completions") == 1
    assert len({r.id for _, r in text}) == 1
    assert cache.stats()["coalesced"] == 9


def test_failed_leader_hands_over_to_a_waiter(slow):
    llmstash.cache = cache = Cache()
    slow.fail_next(500)
    results = run_together(N, lambda i: llmstash.completion(**chat(slow)))
    errors = [r for kind, r in results if kind == "error"]
    answers = [r for kind, r in results if kind == "ok"]
    assert slow.call_count("chat/completions") == 2
    assert len(errors) == 1 and isinstance(errors[0], llmstash.InternalServerError)
    assert len(answers) == N - 1
    assert {a.id for a in answers} == {"chatcmpl-000002"}  # the second upstream call's answer
    assert sorted(hit(a) for a in answers) == [False] + [True] * (N - 2)
    stats = cache.stats()
    assert 1 <= stats["coalesced"] <= N - 2
    assert stats["writes"] == 1


def test_waiters_time_out_within_their_own_timeout_while_the_leader_is_slow():
    llmstash.cache = cache = Cache()
    with MockUpstream(delay=2.5) as server:
        leader_result: list[Any] = []
        leader = threading.Thread(target=lambda: leader_result.append(llmstash.completion(**chat(server))), daemon=True)
        leader.start()
        wait_for(lambda: server.call_count("chat/completions") == 1)  # the leader is in flight

        def waiter(i: int) -> tuple[float, BaseException | None]:
            start = time.monotonic()
            try:
                llmstash.completion(**chat(server, timeout=0.5))
            except llmstash.Timeout as exc:
                return time.monotonic() - start, exc
            return time.monotonic() - start, None

        results = run_together(6, waiter)
        leader.join(10)
        assert not leader.is_alive()

    for kind, (elapsed, exc) in results:
        assert kind == "ok"
        assert isinstance(exc, llmstash.Timeout), "a waiter got an answer before the slow leader had one"
        assert "in flight" in str(exc)
        assert 0.45 <= elapsed < 0.5 + 1.0  # its own timeout, not the leader's 2.5 s
    assert len(leader_result) == 1 and not hit(leader_result[0])
    assert server.call_count("chat/completions") == 1  # the waiters did not go upstream
    assert cache.stats()["coalesced"] == 0


def test_leader_and_waiters_all_time_out_when_the_upstream_is_too_slow():
    llmstash.cache = Cache()
    with MockUpstream(delay=4) as server:

        def call(i: int) -> tuple[float, BaseException | None]:
            start = time.monotonic()
            try:
                llmstash.completion(**chat(server, timeout=0.5))
            except llmstash.Timeout as exc:
                return time.monotonic() - start, exc
            return time.monotonic() - start, None

        results = run_together(8, call)
        calls = server.call_count("chat/completions")

    errors = [exc for _, (_, exc) in results]
    assert all(isinstance(exc, llmstash.Timeout) for exc in errors)
    # each upstream call was made by a leader, whose own request timed out; the others timed out waiting
    from_upstream = [exc for exc in errors if "in flight" not in str(exc)]
    assert 1 <= len(from_upstream) == calls < 8
    # a waiter whose leader failed may lead a second attempt: at most two timeouts, far below the 4 s delay
    assert all(elapsed < 2 * 0.5 + 1.5 for _, (elapsed, _) in results)


def test_different_prompts_do_not_coalesce(slow):
    llmstash.cache = cache = Cache()
    results = run_together(12, lambda i: llmstash.completion(**chat(slow, prompt=f"question number {i}")))
    answers = [r for _, r in results]
    assert slow.call_count("chat/completions") == 12
    assert len({a.id for a in answers}) == 12
    assert [a.choices[0].message.content for a in answers] == [reply_text(f"question number {i}") for i in range(12)]
    assert not any(hit(a) for a in answers)
    assert cache.stats()["coalesced"] == 0


def test_other_parameters_do_not_coalesce(slow):
    llmstash.cache = cache = Cache()
    results = run_together(6, lambda i: llmstash.completion(**chat(slow, temperature=i / 10)))
    assert slow.call_count("chat/completions") == 6
    assert len({r.id for _, r in results}) == 6
    assert cache.stats()["coalesced"] == 0


def test_no_cache_calls_are_not_coalesced(slow):
    llmstash.cache = cache = Cache()
    results = run_together(10, lambda i: llmstash.completion(**chat(slow, cache={"no-cache": True})))
    answers = [r for _, r in results]
    assert slow.call_count("chat/completions") == 10
    assert len({a.id for a in answers}) == 10
    assert not any(hit(a) for a in answers)
    assert cache.stats()["coalesced"] == 0


def test_calls_without_a_cache_are_not_coalesced(slow):
    results = run_together(5, lambda i: llmstash.completion(**chat(slow)))
    assert slow.call_count("chat/completions") == 5
    assert len({r.id for _, r in results}) == 5


def test_no_store_leader_still_answers_its_waiters(slow):
    """Waiters get the leader's answer even when the leader does not store it."""
    llmstash.cache = cache = Cache()
    results = run_together(6, lambda i: llmstash.completion(**chat(slow, cache={"no-store": True})))
    answers = [r for _, r in results]
    assert slow.call_count("chat/completions") == 1
    assert len({a.id for a in answers}) == 1
    assert cache.stats()["writes"] == 0
    assert not hit(llmstash.completion(**chat(slow)))  # and nothing was stored


# ----- streams --------------------------------------------------------------------------------


def test_concurrent_identical_streams_make_one_upstream_call(slow):
    llmstash.cache = cache = Cache()
    results = run_together(10, lambda i: read_stream(llmstash.completion(**chat(slow), stream=True)))
    outcomes = [r for _, r in results]
    assert slow.call_count("chat/completions") == 1
    assert sorted(h for h, _, _ in outcomes) == [False] + [True] * 9
    assert len({i for _, i, _ in outcomes}) == 1
    assert all(content == REPLY for _, _, content in outcomes)
    assert cache.stats()["coalesced"] == 9


def test_streamed_and_non_streamed_calls_share_a_flight(slow):
    llmstash.cache = Cache()

    def call(i: int) -> tuple[bool, str, str]:
        if i % 2:
            return read_stream(llmstash.completion(**chat(slow), stream=True))
        answer = llmstash.completion(**chat(slow))
        return hit(answer), answer.id, answer.choices[0].message.content

    outcomes = [r for _, r in run_together(10, call)]
    assert slow.call_count("chat/completions") == 1
    assert len({i for _, i, _ in outcomes}) == 1
    assert all(content == REPLY for _, _, content in outcomes)


def test_abandoned_leader_stream_lets_the_waiters_retry():
    llmstash.cache = Cache()
    with MockUpstream(chunk_delay=0.01) as server:
        leader = llmstash.completion(**chat(server), stream=True)  # the leader: its flight is open
        assert not hit(leader)
        done = threading.Event()
        results: list[tuple[str, Any]] = []

        def waiters() -> None:
            results.extend(run_together(8, lambda i: read_stream(llmstash.completion(**chat(server), stream=True))))
            done.set()

        threading.Thread(target=waiters, daemon=True).start()
        time.sleep(0.2)  # let the waiters join the leader's flight
        assert not done.is_set()  # they are waiting for the leader's stream
        next(leader)
        leader.close()
        assert done.wait(20)
        calls = server.call_count("chat/completions")

    outcomes = [r for _, r in results]
    assert all(kind == "ok" for kind, _ in results)
    assert calls == 2
    assert sorted(h for h, _, _ in outcomes) == [False] + [True] * 7
    assert {i for _, i, _ in outcomes} == {"chatcmpl-000002"}
    assert all(content == REPLY for _, _, content in outcomes)


def test_cut_leader_stream_lets_the_waiters_retry(slow):
    llmstash.cache = Cache()
    slow.cut_next_stream(3)

    def call(i: int) -> tuple[bool, str, str]:
        return read_stream(llmstash.completion(**chat(slow), stream=True))

    results = run_together(8, call)
    errors = [r for kind, r in results if kind == "error"]
    outcomes = [r for kind, r in results if kind == "ok"]
    assert len(errors) == 1 and isinstance(errors[0], llmstash.APIConnectionError)
    assert slow.call_count("chat/completions") == 2
    assert {i for _, i, _ in outcomes} == {"chatcmpl-000002"}
    assert all(content == REPLY for _, _, content in outcomes)


def test_leader_interrupted_while_opening_its_stream_lets_the_waiters_retry(upstream, monkeypatch):
    class Interrupted(BaseException):
        pass

    real_open = _upstream.open_stream
    attempts = []

    def interrupted_once(request, usage):
        attempts.append(1)
        if len(attempts) == 1:
            raise Interrupted
        return real_open(request, usage)

    monkeypatch.setattr(_upstream, "open_stream", interrupted_once)
    llmstash.cache = Cache()
    with pytest.raises(Interrupted):
        llmstash.completion(**chat(upstream), stream=True)
    # the interrupted leader's flight is closed: a call from another thread neither waits nor times out
    [(kind, outcome)] = run_together(1, lambda i: read_stream(llmstash.completion(**chat(upstream, timeout=2), stream=True)))
    assert kind == "ok", outcome
    assert outcome[0] is False and outcome[2] == REPLY
    assert len(attempts) == 2


# ----- asyncio tasks ------------------------------------------------------------------------------


def test_concurrent_identical_tasks_make_one_upstream_call(slow):
    llmstash.cache = cache = Cache()

    async def scenario():
        return await asyncio.gather(*(llmstash.acompletion(**chat(slow)) for _ in range(N)))

    answers = asyncio.run(scenario())
    assert slow.call_count("chat/completions") == 1
    assert len({a.id for a in answers}) == 1
    assert sorted(hit(a) for a in answers) == [False] + [True] * (N - 1)
    assert cache.stats()["coalesced"] == N - 1


def test_async_failed_leader_hands_over_to_a_waiter(slow):
    llmstash.cache = cache = Cache()
    slow.fail_next(500)

    async def scenario():
        return await asyncio.gather(*(llmstash.acompletion(**chat(slow)) for _ in range(N)), return_exceptions=True)

    results = asyncio.run(scenario())
    errors = [r for r in results if isinstance(r, BaseException)]
    answers = [r for r in results if not isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], llmstash.InternalServerError)
    assert slow.call_count("chat/completions") == 2
    assert {a.id for a in answers} == {"chatcmpl-000002"}
    assert sorted(hit(a) for a in answers) == [False] + [True] * (N - 2)
    assert 1 <= cache.stats()["coalesced"] <= N - 2


def test_async_waiters_time_out_within_their_own_timeout():
    llmstash.cache = Cache()
    with MockUpstream(delay=2.5) as server:

        async def waiter() -> tuple[float, BaseException | None]:
            start = time.monotonic()
            try:
                await llmstash.acompletion(**chat(server, timeout=0.5))
            except llmstash.Timeout as exc:
                return time.monotonic() - start, exc
            return time.monotonic() - start, None

        async def scenario():
            leader = asyncio.create_task(llmstash.acompletion(**chat(server)))
            while server.call_count("chat/completions") == 0:
                await asyncio.sleep(0.005)
            waited = await asyncio.wait_for(asyncio.gather(*(waiter() for _ in range(6))), 10)
            return await asyncio.wait_for(leader, 10), waited

        leader, waited = asyncio.run(scenario())
        calls = server.call_count("chat/completions")

    for elapsed, exc in waited:
        assert isinstance(exc, llmstash.Timeout) and "in flight" in str(exc)
        assert 0.45 <= elapsed < 0.5 + 1.0
    assert not hit(leader) and leader.choices[0].message.content == REPLY
    assert calls == 1


def test_async_leader_and_waiters_all_time_out():
    llmstash.cache = Cache()
    with MockUpstream(delay=4) as server:

        async def call() -> tuple[float, BaseException | None]:
            start = time.monotonic()
            try:
                await llmstash.acompletion(**chat(server, timeout=0.5))
            except llmstash.Timeout as exc:
                return time.monotonic() - start, exc
            return time.monotonic() - start, None

        async def scenario():
            return await asyncio.wait_for(asyncio.gather(*(call() for _ in range(8))), 15)

        results = asyncio.run(scenario())
        calls = server.call_count("chat/completions")

    assert all(isinstance(exc, llmstash.Timeout) for _, exc in results)
    assert 1 <= len([exc for _, exc in results if "in flight" not in str(exc)]) == calls < 8
    assert all(elapsed < 2 * 0.5 + 1.5 for elapsed, _ in results)


def test_async_different_keys_and_no_cache_do_not_coalesce(slow):
    llmstash.cache = cache = Cache()

    async def scenario():
        different = await asyncio.gather(*(llmstash.acompletion(**chat(slow, prompt=f"q {i}")) for i in range(6)))
        no_cache = await asyncio.gather(*(llmstash.acompletion(**chat(slow, cache={"no-cache": True})) for _ in range(6)))
        return different, no_cache

    different, no_cache = asyncio.run(scenario())
    assert len({a.id for a in different}) == 6
    assert len({a.id for a in no_cache}) == 6
    assert slow.call_count("chat/completions") == 12
    assert cache.stats()["coalesced"] == 0


def test_async_concurrent_identical_streams_make_one_upstream_call(slow):
    llmstash.cache = cache = Cache()

    async def one() -> tuple[bool, str, str]:
        return await aread_stream(await llmstash.acompletion(**chat(slow), stream=True))

    async def scenario():
        return await asyncio.gather(*(one() for _ in range(10)))

    outcomes = asyncio.run(scenario())
    assert slow.call_count("chat/completions") == 1
    assert sorted(h for h, _, _ in outcomes) == [False] + [True] * 9
    assert len({i for _, i, _ in outcomes}) == 1
    assert all(content == REPLY for _, _, content in outcomes)
    assert cache.stats()["coalesced"] == 9


def test_async_abandoned_leader_stream_lets_the_waiters_retry():
    llmstash.cache = Cache()
    with MockUpstream(chunk_delay=0.01) as server:

        async def one() -> tuple[bool, str, str]:
            return await aread_stream(await llmstash.acompletion(**chat(server), stream=True))

        async def scenario():
            leader = await llmstash.acompletion(**chat(server), stream=True)
            waiters = asyncio.gather(*(one() for _ in range(6)))
            await asyncio.sleep(0.1)  # let the waiters join the leader's flight
            assert not waiters.done()
            await leader.__anext__()
            await leader.aclose()
            return await asyncio.wait_for(waiters, 10)

        outcomes = asyncio.run(scenario())
        calls = server.call_count("chat/completions")

    assert calls == 2
    assert sorted(h for h, _, _ in outcomes) == [False] + [True] * 5
    assert {i for _, i, _ in outcomes} == {"chatcmpl-000002"}
    assert all(content == REPLY for _, _, content in outcomes)


def test_cancelled_async_leader_lets_the_next_caller_go_upstream():
    llmstash.cache = Cache()
    with MockUpstream(delay=0.5) as server:

        async def scenario():
            leader = asyncio.create_task(llmstash.acompletion(**chat(server), stream=True))
            while server.call_count("chat/completions") == 0:
                await asyncio.sleep(0.005)
            leader.cancel()
            with pytest.raises(asyncio.CancelledError):
                await leader
            # its flight is closed: this call neither waits for it nor times out
            return await aread_stream(await llmstash.acompletion(**chat(server, timeout=3), stream=True))

        outcome = asyncio.run(scenario())
        calls = server.call_count("chat/completions")

    assert outcome[0] is False and outcome[2] == REPLY
    assert calls == 2


def test_cancelled_async_non_stream_leader_lets_the_next_caller_go_upstream():
    llmstash.cache = Cache()
    with MockUpstream(delay=0.5) as server:

        async def scenario():
            leader = asyncio.create_task(llmstash.acompletion(**chat(server)))
            while server.call_count("chat/completions") == 0:
                await asyncio.sleep(0.005)
            leader.cancel()
            with pytest.raises(asyncio.CancelledError):
                await leader
            return await llmstash.acompletion(**chat(server, timeout=3))

        answer = asyncio.run(scenario())
        calls = server.call_count("chat/completions")
    assert not hit(answer) and calls == 2


def test_second_identical_stream_in_the_same_task_does_not_wait_for_the_first(upstream):
    llmstash.cache = Cache()

    async def scenario():
        first = await llmstash.acompletion(**chat(upstream, timeout=3), stream=True)
        second = await llmstash.acompletion(**chat(upstream, timeout=3), stream=True)
        return await aread_stream(first), await aread_stream(second)

    first, second = asyncio.run(scenario())
    assert first[2] == second[2] == REPLY
    assert upstream.call_count("chat/completions") == 2
