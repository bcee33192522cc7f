"""Streaming through the cache: a live stream is stored only when the upstream finishes it; a hit
replays the stored answer as chunks whose concatenation is exactly the original; streamed and
non-streamed requests share one entry in both directions."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmstash
from llmstash import exceptions
from llmstash._core import streams
from llmstash.caching import Cache
from llmstash.integrations.custom_logger import CustomLogger
from llmstash.providers import http
from llmstash.testing import MockUpstream
from llmstash.testing.upstream import reply_text, stream_chunks

PROMPT = "Tell me a joke about caches."
MSGS = [{"role": "user", "content": PROMPT}]
REPLY = reply_text(PROMPT)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look something up.",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        },
    }
]
# Whitespace runs, newlines, tabs, non-ASCII and an emoji: cut every 3 characters by the upstream and
# into word-sized pieces by the replay, the concatenation must still be exactly this text.
TRICKY = "  Héllo,\n\n  wörld\t—  tabs\tand  double  spaces 🎉 end.  \n"


def hit(obj: Any) -> bool:
    return obj._hidden_params["cache_hit"]


def chat(upstream: MockUpstream, **extra: Any) -> dict[str, Any]:
    return {"model": "openai/demo", "messages": MSGS, "api_base": upstream.base_url, "timeout": 10, **extra}


def text_args(upstream: MockUpstream, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-3.5-turbo-instruct", "prompt": PROMPT, "api_base": upstream.base_url, "timeout": 10, **extra}


def rebuild(chunks: list[Any]) -> dict[str, Any]:
    """What a client makes of a list of chunk objects (independent of llmstash's own assembler)."""
    ids: set[str] = set()
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    for chunk in chunks:
        data = chunk.model_dump()
        ids.add(data["id"])
        if data.get("usage") is not None:
            usage = data["usage"]
        for choice in data["choices"]:
            slot = choices.setdefault(choice["index"], {"role": None, "content": "", "finish_reason": None, "tool_calls": {}})
            if choice.get("finish_reason"):
                assert slot["finish_reason"] is None, "two finish reasons for one choice"
                slot["finish_reason"] = choice["finish_reason"]
            if "text" in choice:
                slot["content"] += choice["text"]
                continue
            delta = choice["delta"]
            if delta.get("role"):
                slot["role"] = delta["role"]
            slot["content"] += delta.get("content") or ""
            for call in delta.get("tool_calls") or ():
                merged = slot["tool_calls"].setdefault(call["index"], {"id": None, "name": "", "arguments": ""})
                if call.get("id"):
                    merged["id"] = call["id"]
                function = call.get("function") or {}
                merged["name"] += function.get("name") or ""
                merged["arguments"] += function.get("arguments") or ""
    return {"ids": ids, "choices": choices, "usage": usage}


def usage_chunks(chunks: list[Any]) -> list[Any]:
    return [c for c in chunks if c.get("usage") is not None or not c.choices]


class Recorder(CustomLogger):
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any], Any]] = []

    def log_success_event(self, kwargs, response_obj, start_time, end_time):
        self.events.append(("success", kwargs, response_obj))

    def log_failure_event(self, kwargs, response_obj, start_time, end_time):
        self.events.append(("failure", kwargs, response_obj))


class TrickyUpstream(MockUpstream):
    """Answers every chat request with :data:`TRICKY` (or two tool calls when asked for tools)."""

    def answer(self, path: str, body: dict[str, Any], number: int) -> dict[str, Any]:
        answer = super().answer(path, body, number)
        if path.endswith("/chat/completions"):
            message = answer["choices"][0]["message"]
            if message.get("tool_calls"):
                second = {
                    "id": f"call_b{number:05d}",
                    "type": "function",
                    "function": {"name": "second_tool", "arguments": json.dumps({"ünïcode": "✓", "n": [1, 2, 3]})},
                }
                message["tool_calls"].append(second)
            else:
                message["content"] = TRICKY
        return answer


@pytest.fixture
def tricky():
    with TrickyUpstream() as server:
        yield server


# ----- miss, store, replay ----------------------------------------------------------------------


def test_stream_miss_then_replayed_hit(upstream):
    llmstash.cache = Cache()
    live = llmstash.completion(**chat(upstream), stream=True)
    assert hit(live) is False
    first = list(live)
    assert len(first) > 3
    assert all(hit(chunk) is False for chunk in first)
    assert all(chunk.object == "chat.completion.chunk" for chunk in first)

    replay = llmstash.completion(**chat(upstream), stream=True)
    assert hit(replay) is True
    second = list(replay)
    assert all(hit(chunk) is True for chunk in second)
    assert all(chunk.object == "chat.completion.chunk" for chunk in second)
    assert upstream.call_count("chat/completions") == 1

    a, b = rebuild(first), rebuild(second)
    assert a["choices"][0]["content"] == REPLY
    assert b["choices"][0]["content"].encode() == REPLY.encode()
    assert a["choices"][0]["role"] == b["choices"][0]["role"] == "assistant"
    assert a["choices"][0]["finish_reason"] == b["choices"][0]["finish_reason"] == "stop"
    assert len(a["ids"]) == 1 and a["ids"] == b["ids"]
    assert first[0].created == second[0].created and first[0].model == second[0].model


def test_replay_is_byte_identical_for_tricky_whitespace_and_unicode(tricky):
    llmstash.cache = Cache()
    first = rebuild(list(llmstash.completion(**chat(tricky), stream=True)))
    second_stream = llmstash.completion(**chat(tricky), stream=True)
    assert hit(second_stream)
    second = rebuild(list(second_stream))
    assert first["choices"][0]["content"] == TRICKY
    assert second["choices"][0]["content"].encode("utf-8") == TRICKY.encode("utf-8")
    plain = llmstash.completion(**chat(tricky))  # the stored entry, read non-streamed
    assert hit(plain) and plain.choices[0].message.content == TRICKY
    assert tricky.call_count("chat/completions") == 1


def test_text_completion_stream_miss_hit_and_shared_entry(upstream):
    llmstash.cache = Cache()
    live = llmstash.text_completion(**text_args(upstream), stream=True)
    first = list(live)
    assert hit(live) is False and all(hit(c) is False for c in first)
    assert all(c.object == "text_completion" for c in first)
    replay = llmstash.text_completion(**text_args(upstream), stream=True)
    second = list(replay)
    assert hit(replay) and all(hit(c) for c in second)
    a, b = rebuild(first), rebuild(second)
    assert a["choices"][0]["content"] == b["choices"][0]["content"] == REPLY
    assert a["choices"][0]["finish_reason"] == b["choices"][0]["finish_reason"] == "stop"
    assert a["ids"] == b["ids"] and len(a["ids"]) == 1

    plain = llmstash.text_completion(**text_args(upstream))
    assert hit(plain)
    assert isinstance(plain, llmstash.TextCompletionResponse)
    assert plain.id in a["ids"] and plain.choices[0].text == REPLY
    assert upstream.call_count("/v1/completions") == 1


def test_tool_call_deltas_replay(tricky):
    llmstash.cache = Cache()
    live = list(llmstash.completion(**chat(tricky), tools=TOOLS, stream=True))
    replay_stream = llmstash.completion(**chat(tricky), tools=TOOLS, stream=True)
    replay = list(replay_stream)
    assert hit(replay_stream) and all(hit(c) for c in replay)
    a, b = rebuild(live)["choices"][0], rebuild(replay)["choices"][0]
    assert a["finish_reason"] == b["finish_reason"] == "tool_calls"
    assert a["tool_calls"] == b["tool_calls"]
    assert sorted(b["tool_calls"]) == [0, 1]
    first, second = b["tool_calls"][0], b["tool_calls"][1]
    assert first["id"] == "call_000001" and first["name"] == "lookup"
    assert json.loads(first["arguments"]) == {"query": PROMPT}
    assert first["arguments"] == json.dumps({"query": PROMPT})
    assert second["name"] == "second_tool"
    assert second["arguments"] == json.dumps({"ünïcode": "✓", "n": [1, 2, 3]})

    plain = llmstash.completion(**chat(tricky), tools=TOOLS)
    assert hit(plain)
    calls = plain.choices[0].message.tool_calls
    assert [(c.id, c.type, c.function.name, c.function.arguments) for c in calls] == [
        (first["id"], "function", "lookup", first["arguments"]),
        (second["id"], "function", "second_tool", second["arguments"]),
    ]
    assert tricky.call_count("chat/completions") == 1


def test_tool_call_request_keyed_apart_from_plain_request(upstream):
    llmstash.cache = Cache()
    list(llmstash.completion(**chat(upstream), stream=True))
    with_tools = rebuild(list(llmstash.completion(**chat(upstream), tools=TOOLS, stream=True)))
    assert with_tools["choices"][0]["tool_calls"][0]["name"] == "lookup"
    assert upstream.call_count("chat/completions") == 2


def test_usage_chunk_only_when_asked(upstream):
    llmstash.cache = Cache()
    asked = {"stream_options": {"include_usage": True}}
    miss_plain = list(llmstash.completion(**chat(upstream), stream=True))
    assert usage_chunks(miss_plain) == []  # llmstash asked the upstream for usage, but hides it
    assert upstream.calls[0].body["stream_options"] == {"include_usage": True}

    hit_plain = list(llmstash.completion(**chat(upstream), stream=True))
    assert usage_chunks(hit_plain) == []
    assert all(hit(c) for c in hit_plain)

    hit_usage = list(llmstash.completion(**chat(upstream), stream=True, **asked))
    assert all(hit(c) for c in hit_usage)
    assert len(usage_chunks(hit_usage)) == 1 and hit_usage[-1].choices == []
    plain = llmstash.completion(**chat(upstream), cache={"no-cache": True, "no-store": True})
    assert hit_usage[-1].usage == plain.usage  # what the upstream bills for this request
    assert upstream.call_count("chat/completions") == 2


def test_usage_chunk_on_miss_and_hit_when_asked(upstream):
    llmstash.cache = Cache()
    asked = {"stream_options": {"include_usage": True}}
    miss = list(llmstash.completion(**chat(upstream), stream=True, **asked))
    assert len(usage_chunks(miss)) == 1 and miss[-1].choices == [] and miss[-1].usage.total_tokens > 0
    again = list(llmstash.completion(**chat(upstream), stream=True, **asked))
    assert len(usage_chunks(again)) == 1
    assert again[-1].usage == miss[-1].usage
    assert rebuild(again)["usage"] == rebuild(miss)["usage"]
    # and a later non-streamed request reads the same usage
    assert llmstash.completion(**chat(upstream)).usage == miss[-1].usage
    assert upstream.call_count("chat/completions") == 1


def test_upstream_asked_for_usage_only_when_the_answer_is_stored(upstream):
    llmstash.cache = Cache()
    list(llmstash.completion(**chat(upstream), stream=True))
    assert upstream.calls[-1].body["stream"] is True
    assert upstream.calls[-1].body["stream_options"] == {"include_usage": True}

    list(llmstash.completion(**chat(upstream), stream=True, cache={"no-store": True, "no-cache": True}))
    assert upstream.calls[-1].body["stream"] is True
    assert "stream_options" not in upstream.calls[-1].body

    llmstash.cache = None
    list(llmstash.completion(**chat(upstream), stream=True))
    assert "stream_options" not in upstream.calls[-1].body

    # the caller's own request for usage is forwarded even when nothing is stored
    chunks = list(llmstash.completion(**chat(upstream), stream=True, stream_options={"include_usage": True}))
    assert upstream.calls[-1].body["stream_options"] == {"include_usage": True}
    assert len(usage_chunks(chunks)) == 1
    assert upstream.call_count("chat/completions") == 4


def test_n_choices_replay_with_their_indices(upstream):
    llmstash.cache = Cache()
    live = rebuild(list(llmstash.completion(**chat(upstream), n=2, stream=True)))
    replay_stream = llmstash.completion(**chat(upstream), n=2, stream=True)
    replay_chunks = list(replay_stream)
    assert hit(replay_stream)
    replay = rebuild(replay_chunks)
    assert sorted(live["choices"]) == sorted(replay["choices"]) == [0, 1]
    for index in (0, 1):
        assert replay["choices"][index]["content"] == live["choices"][index]["content"] == REPLY
        assert replay["choices"][index]["finish_reason"] == "stop"
    plain = llmstash.completion(**chat(upstream), n=2)
    assert hit(plain) and [c.index for c in plain.choices] == [0, 1]
    assert upstream.call_count("chat/completions") == 1
    # n is keyed: n=1 is another request
    list(llmstash.completion(**chat(upstream), stream=True))
    assert upstream.call_count("chat/completions") == 2


def test_mock_response_stream(upstream):
    llmstash.cache = Cache()
    args = dict(model="gpt-4o-mini", messages=MSGS, mock_response=TRICKY)
    live = llmstash.completion(**args, stream=True)
    first = list(live)
    assert hit(live) is False and usage_chunks(first) == []
    replay = llmstash.completion(**args, stream=True)
    second = list(replay)
    assert hit(replay)
    assert rebuild(first)["choices"][0]["content"] == rebuild(second)["choices"][0]["content"] == TRICKY
    assert rebuild(first)["ids"] == rebuild(second)["ids"]
    assert llmstash.completion(**args).choices[0].message.content == TRICKY
    assert upstream.calls == []


# ----- streamed and non-streamed requests share entries ------------------------------------------


def test_stream_then_non_stream_hit(upstream):
    llmstash.cache = Cache()
    live = rebuild(list(llmstash.completion(**chat(upstream), stream=True)))
    plain = llmstash.completion(**chat(upstream))
    assert hit(plain) and isinstance(plain, llmstash.ModelResponse)
    assert plain.object == "chat.completion"
    assert {plain.id} == live["ids"]
    assert plain.choices[0].message.content == live["choices"][0]["content"] == REPLY
    assert plain.choices[0].message.role == "assistant"
    assert plain.choices[0].finish_reason == "stop"
    fresh = llmstash.completion(**chat(upstream), cache={"no-cache": True, "no-store": True})
    assert fresh.id != plain.id
    assert plain.usage == fresh.usage and plain.usage.total_tokens > 0
    assert plain.system_fingerprint == fresh.system_fingerprint
    assert upstream.call_count("chat/completions") == 2


def test_non_stream_then_stream_replay_equals_the_message(upstream):
    llmstash.cache = Cache()
    plain = llmstash.completion(**chat(upstream))
    replay_stream = llmstash.completion(**chat(upstream), stream=True, stream_options={"include_usage": True})
    chunks = list(replay_stream)
    assert hit(replay_stream) and all(hit(c) for c in chunks)
    replay = rebuild(chunks)
    assert replay["ids"] == {plain.id}
    choice = replay["choices"][0]
    assert choice["content"] == plain.choices[0].message.content
    assert choice["role"] == plain.choices[0].message.role
    assert choice["finish_reason"] == plain.choices[0].finish_reason
    assert replay["usage"] == plain.usage.model_dump()
    assert upstream.call_count("chat/completions") == 1


def test_non_stream_tool_call_then_stream_replay(upstream):
    llmstash.cache = Cache()
    plain = llmstash.completion(**chat(upstream), tools=TOOLS)
    call = plain.choices[0].message.tool_calls[0]
    replay = rebuild(list(llmstash.completion(**chat(upstream), tools=TOOLS, stream=True)))
    assert replay["choices"][0]["tool_calls"] == {
        0: {"id": call.id, "name": call.function.name, "arguments": call.function.arguments}
    }
    assert replay["choices"][0]["finish_reason"] == "tool_calls"
    assert upstream.call_count("chat/completions") == 1


def test_stream_options_and_stream_are_not_keyed(upstream):
    llmstash.cache = Cache()
    list(llmstash.completion(**chat(upstream), stream=True, stream_options={"include_usage": True}))
    list(llmstash.completion(**chat(upstream), stream=True))
    llmstash.completion(**chat(upstream), stream=False)
    assert upstream.call_count("chat/completions") == 1


# ----- nothing stored unless the upstream finished ----------------------------------------------


@pytest.mark.parametrize("cut_after", [1, 4])
def test_cut_stream_stores_nothing(upstream, cut_after):
    llmstash.cache = Cache()
    upstream.cut_next_stream(cut_after)
    live = llmstash.completion(**chat(upstream), stream=True)
    received = []
    with pytest.raises(exceptions.APIConnectionError):
        for chunk in live:
            received.append(chunk)
    assert len(received) == cut_after
    again = llmstash.completion(**chat(upstream), stream=True)
    assert hit(again) is False
    assert rebuild(list(again))["choices"][0]["content"] == REPLY
    assert upstream.call_count("chat/completions") == 2
    assert hit(llmstash.completion(**chat(upstream)))  # the complete second stream was stored


def test_stream_cut_after_its_last_chunk_stores_nothing(upstream):
    """Every chunk (finish reason and usage included) arrived, but the stream did not end normally."""
    llmstash.cache = Cache()
    body = {"model": "demo", "messages": MSGS}
    every_chunk = len(stream_chunks(upstream.answer("/v1/chat/completions", body, 1), include_usage=True))
    upstream.cut_next_stream(every_chunk)
    received = []
    with pytest.raises(exceptions.APIConnectionError):
        for chunk in llmstash.completion(**chat(upstream), stream=True):
            received.append(chunk)
    assert rebuild(received)["choices"][0]["finish_reason"] == "stop"
    assert rebuild(received)["choices"][0]["content"] == REPLY
    assert hit(llmstash.completion(**chat(upstream))) is False
    assert upstream.call_count("chat/completions") == 2


class UnfinishedUpstream(MockUpstream):
    """Ends its streams cleanly ([DONE], then the end of the body) without any finish reason."""

    def answer(self, path: str, body: dict[str, Any], number: int) -> dict[str, Any]:
        answer = super().answer(path, body, number)
        for choice in answer["choices"]:
            choice["finish_reason"] = None
        return answer


def test_stream_that_ends_without_a_finish_reason_stores_nothing():
    llmstash.cache = Cache()
    with UnfinishedUpstream() as server:
        received = rebuild(list(llmstash.completion(**chat(server), stream=True)))
        assert received["choices"][0]["content"] == REPLY and received["choices"][0]["finish_reason"] is None
        assert hit(llmstash.completion(**chat(server), stream=True)) is False
        assert server.call_count("chat/completions") == 2


def test_closed_stream_stores_nothing(upstream):
    llmstash.cache = Cache()
    live = llmstash.completion(**chat(upstream), stream=True)
    assert next(live).choices[0].delta.role == "assistant"
    live.close()
    with pytest.raises(StopIteration):
        next(live)
    again = llmstash.completion(**chat(upstream), stream=True)
    assert hit(again) is False
    assert rebuild(list(again))["choices"][0]["content"] == REPLY
    assert upstream.call_count("chat/completions") == 2
    assert hit(llmstash.completion(**chat(upstream)))


def test_stream_left_by_a_with_block_stores_nothing(upstream):
    llmstash.cache = Cache()
    with llmstash.completion(**chat(upstream), stream=True) as live:
        next(live)
        next(live)
    assert hit(llmstash.completion(**chat(upstream))) is False
    assert upstream.call_count("chat/completions") == 2


def test_stream_read_to_its_finish_chunk_but_not_to_its_end_stores_nothing(upstream):
    """The caller stopped after the finish reason: the upstream never got to say it was done."""
    llmstash.cache = Cache()
    live = llmstash.completion(**chat(upstream), stream=True)
    for chunk in live:
        if chunk.choices[0].finish_reason:
            break
    live.close()
    assert hit(llmstash.completion(**chat(upstream))) is False


def test_dropped_stream_stores_nothing(upstream):
    llmstash.cache = Cache()
    live = llmstash.completion(**chat(upstream), stream=True)
    next(live)
    del live  # no close(): just forgotten
    again = llmstash.completion(**chat(upstream), stream=True)
    assert hit(again) is False
    assert rebuild(list(again))["choices"][0]["content"] == REPLY
    assert upstream.call_count("chat/completions") == 2


def test_stream_dropped_before_its_first_chunk_stores_nothing_and_blocks_nobody(upstream):
    llmstash.cache = Cache()
    live = llmstash.completion(**chat(upstream), stream=True)
    del live
    again = llmstash.completion(**chat(upstream, timeout=5), stream=True)
    assert hit(again) is False
    assert rebuild(list(again))["choices"][0]["content"] == REPLY
    assert upstream.call_count("chat/completions") == 2
    assert hit(llmstash.completion(**chat(upstream)))


def test_stream_closed_before_its_first_chunk_stores_nothing(upstream):
    llmstash.cache = Cache()
    live = llmstash.completion(**chat(upstream), stream=True)
    live.close()
    assert list(live) == []
    assert hit(llmstash.completion(**chat(upstream, timeout=5))) is False
    assert upstream.call_count("chat/completions") == 2


def test_abandoned_streams_give_their_connection_back(upstream, monkeypatch):
    """With one pooled connection, each stream must release it, however it was abandoned."""
    monkeypatch.setattr(http, "_sync_client", httpx.Client(limits=httpx.Limits(max_connections=1)))
    llmstash.cache = Cache()
    try:
        for attempt in range(3):  # dropped unread, closed unread, closed after one chunk
            live = llmstash.completion(**chat(upstream, timeout=2), stream=True)
            if attempt == 1:
                live.close()
            elif attempt == 2:
                next(live)
                live.close()
            del live
        assert rebuild(list(llmstash.completion(**chat(upstream, timeout=2), stream=True)))["choices"][0]["content"] == REPLY
    finally:
        http._sync_client.close()
    assert upstream.call_count("chat/completions") == 4


def test_abandoned_async_streams_give_their_connection_back(upstream):
    llmstash.cache = Cache()

    async def scenario():
        client = httpx.AsyncClient(limits=httpx.Limits(max_connections=1))
        http._async_clients[asyncio.get_running_loop()] = client
        try:
            for attempt in range(3):
                live = await llmstash.acompletion(**chat(upstream, timeout=2), stream=True)
                if attempt == 1:
                    await live.aclose()
                elif attempt == 2:
                    await live.__anext__()
                    await live.aclose()
                del live
                await asyncio.sleep(0.05)  # let the event loop finalize a dropped async generator
            return await collect(await llmstash.acompletion(**chat(upstream, timeout=2), stream=True))
        finally:
            await client.aclose()

    assert rebuild(asyncio.run(scenario()))["choices"][0]["content"] == REPLY
    assert upstream.call_count("chat/completions") == 4


def test_second_stream_opened_in_the_same_thread_does_not_wait_for_the_first(upstream):
    """Two identical streams opened one after the other, read afterwards: the second cannot wait
    for the first (its reader is this very thread)."""
    llmstash.cache = Cache()
    first = llmstash.completion(**chat(upstream, timeout=3), stream=True)
    second = llmstash.completion(**chat(upstream, timeout=3), stream=True)
    assert rebuild(list(first))["choices"][0]["content"] == REPLY
    assert rebuild(list(second))["choices"][0]["content"] == REPLY
    assert upstream.call_count("chat/completions") == 2


def test_text_completion_cut_stream_stores_nothing(upstream):
    llmstash.cache = Cache()
    upstream.cut_next_stream(2)
    with pytest.raises(exceptions.APIConnectionError):
        list(llmstash.text_completion(**text_args(upstream), stream=True))
    assert hit(llmstash.text_completion(**text_args(upstream))) is False
    assert upstream.call_count("/v1/completions") == 2


def test_upstream_error_status_raises_before_the_stream(upstream):
    llmstash.cache = Cache()
    upstream.fail_next(503)
    with pytest.raises(exceptions.ServiceUnavailableError):
        llmstash.completion(**chat(upstream), stream=True)
    assert rebuild(list(llmstash.completion(**chat(upstream, timeout=5), stream=True)))["choices"][0]["content"] == REPLY
    assert upstream.call_count("chat/completions") == 2


def test_stream_cache_controls(upstream):
    llmstash.cache = Cache()
    list(llmstash.completion(**chat(upstream), stream=True, cache={"no-store": True}))
    second = llmstash.completion(**chat(upstream), stream=True)
    assert hit(second) is False  # nothing was stored
    list(second)
    third = llmstash.completion(**chat(upstream), stream=True, cache={"no-cache": True})
    assert hit(third) is False  # not read, though cached
    third_id = rebuild(list(third))["ids"]
    assert upstream.call_count("chat/completions") == 3
    replay = llmstash.completion(**chat(upstream), stream=True)
    assert hit(replay) and rebuild(list(replay))["ids"] == third_id  # the no-cache answer replaced the entry
    assert upstream.call_count("chat/completions") == 3


# ----- callbacks ----------------------------------------------------------------------------------


def test_one_success_event_per_stream_at_its_end(upstream):
    llmstash.cache = Cache()
    recorder = Recorder()
    llmstash.callbacks = [recorder]
    live = llmstash.completion(**chat(upstream), stream=True)
    next(live)
    assert recorder.events == []
    rest = list(live)
    assert rest
    assert [(kind, kwargs["cache_hit"]) for kind, kwargs, _ in recorder.events] == [("success", False)]
    assembled = recorder.events[0][2]
    assert isinstance(assembled, llmstash.ModelResponse)
    assert assembled.choices[0].message.content == REPLY

    replay = llmstash.completion(**chat(upstream), stream=True)
    list(replay)
    assert [(kind, kwargs["cache_hit"]) for kind, kwargs, _ in recorder.events] == [("success", False), ("success", True)]
    assert recorder.events[1][1]["cache_key"] == recorder.events[0][1]["cache_key"] is not None


def test_failure_event_for_a_cut_stream(upstream):
    llmstash.cache = Cache()
    recorder = Recorder()
    llmstash.callbacks = [recorder]
    upstream.cut_next_stream(3)
    with pytest.raises(exceptions.APIConnectionError) as caught:
        list(llmstash.completion(**chat(upstream), stream=True))
    assert [kind for kind, _, _ in recorder.events] == ["failure"]
    assert recorder.events[0][1]["exception"] is caught.value


def test_no_success_event_for_an_abandoned_stream(upstream):
    llmstash.cache = Cache()
    recorder = Recorder()
    llmstash.callbacks = [recorder]
    live = llmstash.completion(**chat(upstream), stream=True)
    next(live)
    live.close()
    assert [kind for kind, _, _ in recorder.events if kind == "success"] == []


def test_async_callbacks_for_streams(upstream):
    llmstash.cache = Cache()
    recorder = Recorder()  # the async defaults call the sync methods
    llmstash.callbacks = [recorder]

    async def scenario():
        live = await llmstash.acompletion(**chat(upstream), stream=True)
        first = await live.__anext__()
        assert first.choices[0].delta.role == "assistant" and recorder.events == []
        async for _ in live:
            pass
        assert [(k, kw["cache_hit"]) for k, kw, _ in recorder.events] == [("success", False)]
        upstream.cut_next_stream(2)
        with pytest.raises(exceptions.APIConnectionError):
            async for _ in await llmstash.acompletion(**chat(upstream, temperature=0.5), stream=True):
                pass
        assert [k for k, _, _ in recorder.events] == ["success", "failure"]

    asyncio.run(scenario())


# ----- async --------------------------------------------------------------------------------------


async def collect(stream: Any) -> list[Any]:
    return [chunk async for chunk in stream]


def test_acompletion_stream_miss_then_hit(upstream):
    llmstash.cache = Cache()

    async def scenario():
        live = await llmstash.acompletion(**chat(upstream), stream=True)
        first = await collect(live)
        replay = await llmstash.acompletion(**chat(upstream), stream=True)
        second = await collect(replay)
        return live, first, replay, second

    live, first, replay, second = asyncio.run(scenario())
    assert hit(live) is False and all(hit(c) is False for c in first)
    assert hit(replay) is True and all(hit(c) is True for c in second)
    a, b = rebuild(first), rebuild(second)
    assert a["choices"][0]["content"] == b["choices"][0]["content"] == REPLY
    assert a["ids"] == b["ids"]
    assert usage_chunks(first) == usage_chunks(second) == []
    assert upstream.call_count("chat/completions") == 1
    # shared with sync, streamed or not
    assert hit(llmstash.completion(**chat(upstream)))
    assert rebuild(list(llmstash.completion(**chat(upstream), stream=True)))["ids"] == a["ids"]


def test_acompletion_stream_tool_calls_and_usage(tricky):
    llmstash.cache = Cache()
    asked = {"stream_options": {"include_usage": True}}

    async def scenario():
        first = await collect(await llmstash.acompletion(**chat(tricky), tools=TOOLS, stream=True, **asked))
        second = await collect(await llmstash.acompletion(**chat(tricky), tools=TOOLS, stream=True, **asked))
        third = await collect(await llmstash.acompletion(**chat(tricky), tools=TOOLS, stream=True))
        return first, second, third

    first, second, third = asyncio.run(scenario())
    a, b = rebuild(first), rebuild(second)
    assert a["choices"][0]["tool_calls"] == b["choices"][0]["tool_calls"]
    assert len(b["choices"][0]["tool_calls"]) == 2
    assert a["usage"] == b["usage"] and b["usage"]["total_tokens"] > 0
    assert usage_chunks(third) == [] and rebuild(third)["choices"][0]["tool_calls"] == a["choices"][0]["tool_calls"]
    assert tricky.call_count("chat/completions") == 1


def test_atext_completion_stream(upstream):
    llmstash.cache = Cache()

    async def scenario():
        first = await collect(await llmstash.atext_completion(**text_args(upstream), stream=True))
        replay = await llmstash.atext_completion(**text_args(upstream), stream=True)
        return first, replay, await collect(replay)

    first, replay, second = asyncio.run(scenario())
    assert hit(replay) and all(hit(c) for c in second)
    assert rebuild(first)["choices"][0]["content"] == rebuild(second)["choices"][0]["content"] == REPLY
    assert upstream.call_count("/v1/completions") == 1


def test_acompletion_cut_stream_stores_nothing(upstream):
    llmstash.cache = Cache()

    async def scenario():
        upstream.cut_next_stream(3)
        received = []
        with pytest.raises(exceptions.APIConnectionError):
            async for chunk in await llmstash.acompletion(**chat(upstream), stream=True):
                received.append(chunk)
        assert len(received) == 3
        again = await llmstash.acompletion(**chat(upstream, timeout=5), stream=True)
        return again, await collect(again)

    again, chunks = asyncio.run(scenario())
    assert hit(again) is False
    assert rebuild(chunks)["choices"][0]["content"] == REPLY
    assert upstream.call_count("chat/completions") == 2


def test_acompletion_closed_stream_stores_nothing(upstream):
    llmstash.cache = Cache()

    async def scenario():
        live = await llmstash.acompletion(**chat(upstream), stream=True)
        await live.__anext__()
        await live.aclose()
        again = await llmstash.acompletion(**chat(upstream, timeout=5), stream=True)
        return again, await collect(again)

    again, chunks = asyncio.run(scenario())
    assert hit(again) is False
    assert rebuild(chunks)["choices"][0]["content"] == REPLY
    assert upstream.call_count("chat/completions") == 2


def test_acompletion_stream_left_by_async_with_stores_nothing(upstream):
    llmstash.cache = Cache()

    async def scenario():
        async with await llmstash.acompletion(**chat(upstream), stream=True) as live:
            await live.__anext__()
        return await llmstash.acompletion(**chat(upstream, timeout=5))

    assert hit(asyncio.run(scenario())) is False
    assert upstream.call_count("chat/completions") == 2


@pytest.mark.parametrize("read_first", [True, False])
def test_acompletion_dropped_stream_stores_nothing(upstream, read_first):
    llmstash.cache = Cache()

    async def scenario():
        live = await llmstash.acompletion(**chat(upstream), stream=True)
        if read_first:
            await live.__anext__()
        del live
        again = await llmstash.acompletion(**chat(upstream, timeout=5), stream=True)
        return again, await collect(again)

    again, chunks = asyncio.run(scenario())
    assert hit(again) is False
    assert rebuild(chunks)["choices"][0]["content"] == REPLY
    assert upstream.call_count("chat/completions") == 2
    assert hit(llmstash.completion(**chat(upstream)))


def test_acompletion_mock_response_stream():
    llmstash.cache = Cache()
    args = dict(model="gpt-4o-mini", messages=MSGS, mock_response="async mocked  reply\n")

    async def scenario():
        first = await collect(await llmstash.acompletion(**args, stream=True))
        replay = await llmstash.acompletion(**args, stream=True)
        return first, replay, await collect(replay)

    first, replay, second = asyncio.run(scenario())
    assert hit(replay)
    assert rebuild(first)["choices"][0]["content"] == rebuild(second)["choices"][0]["content"] == "async mocked  reply\n"


def test_stream_with_embedding_is_refused(upstream):
    llmstash.cache = Cache()
    with pytest.raises(llmstash.ConfigurationError):
        llmstash.embedding(model="text-embedding-3-small", input="x", api_base=upstream.base_url, stream=True)
    assert upstream.calls == []


# ----- assemble and replay, without I/O ---------------------------------------------------------

texts = st.text(alphabet=st.sampled_from(list("ab c\n\t\u00e9\u2014🎉  ")), max_size=40)


@given(texts)
def test_pieces_concatenate_to_the_text(text):
    parts = streams.pieces(text)
    assert "".join(parts) == text
    assert all(parts) or parts == [""]


tool_call = st.fixed_dictionaries(
    {
        "id": st.from_regex(r"call_[a-z0-9]{1,6}", fullmatch=True),
        "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": st.from_regex(r"[a-z_]{1,8}", fullmatch=True), "arguments": texts}),
    }
)


@st.composite
def chat_responses(draw):
    n = draw(st.integers(1, 3))
    choices = []
    for index in range(n):
        calls = draw(st.lists(tool_call, max_size=2))
        message: dict[str, Any] = {"role": "assistant", "content": draw(texts)}
        if calls:
            message["tool_calls"] = calls
        finish = "tool_calls" if calls else draw(st.sampled_from(["stop", "length"]))
        choices.append({"index": index, "message": message, "logprobs": None, "finish_reason": finish})
    return {
        "id": "chatcmpl-x",
        "created": 1700000000,
        "model": "demo",
        "system_fingerprint": "fp",
        "object": "chat.completion",
        "choices": choices,
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }


@settings(max_examples=150, deadline=None)
@given(chat_responses(), st.booleans())
def test_assembling_a_replay_gives_back_the_response(response, include_usage):
    chunks = list(streams.replay("chat", response, include_usage))
    assert all(chunk["object"] == "chat.completion.chunk" and chunk["id"] == "chatcmpl-x" for chunk in chunks)
    assert sum(1 for chunk in chunks if not chunk["choices"]) == (1 if include_usage else 0)
    rebuilt = streams.assemble("chat", chunks)
    expected = dict(response)
    if not include_usage:
        del expected["usage"]
    assert rebuilt == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(texts, st.sampled_from(["stop", "length"])), min_size=1, max_size=3))
def test_assembling_a_text_replay_gives_back_the_response(choices):
    response = {
        "id": "cmpl-x",
        "created": 1,
        "model": "m",
        "object": "text_completion",
        "choices": [{"index": i, "text": t, "logprobs": None, "finish_reason": f} for i, (t, f) in enumerate(choices)],
    }
    assert streams.assemble("text", streams.replay("text", response, True)) == response


@settings(max_examples=100, deadline=None)
@given(texts, st.integers(1, 5))
def test_assemble_joins_upstream_pieces_of_any_size(text, size):
    answer = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunks = [{**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    chunks += [
        {**head, "choices": [{"index": 0, "delta": {"content": text[i : i + size]}, "finish_reason": None}]}
        for i in range(0, len(text), size)
    ]
    chunks.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    chunks.append({**head, "choices": [], "usage": answer["usage"]})
    assert streams.assemble("chat", chunks) == answer
