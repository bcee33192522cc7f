"""The caching proxy in this process (uvicorn in a thread) in front of the recording MockUpstream,
driven by the official openai SDK and by curl: routes, streaming, cache headers, auth, per-key
scopes, admin routes, /metrics, and what must never leak."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from llmstash.proxy.auth import scope_namespace
from llmstash.testing import MockUpstream
from llmstash.testing.proxy import ProxyThread, ensure_command

MASTER = "sk-master-0123456789"
TEAM_A = "sk-team-a-0123456789"
TEAM_B = "sk-team-b-0123456789"
UPSTREAM_KEY = "sk-upstream-secret-424242"
MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def config_for(upstream: MockUpstream, **settings: Any) -> dict[str, Any]:
    cache_params = settings.pop("cache_params", {"type": "local"})
    scope = settings.pop("cache_scope", "shared")
    return {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": upstream.base_url,
                    "api_key": "os.environ/PROXY_TEST_UPSTREAM_KEY",
                },
                "model_info": {"input_cost_per_token": 0.000001, "output_cost_per_token": 0.000002},
            },
            {
                "model_name": "whisper-1",
                "litellm_params": {"model": "openai/whisper-1", "api_base": upstream.base_url, "api_key": UPSTREAM_KEY},
            },
        ],
        "litellm_settings": {"cache": True, "cache_params": cache_params, "cache_scope": scope},
        "general_settings": {"master_key": MASTER, "virtual_keys": [{"key": TEAM_A, "name": "team-a"}, TEAM_B], **settings},
    }


@pytest.fixture
def upstream(monkeypatch: pytest.MonkeyPatch) -> Iterator[MockUpstream]:
    monkeypatch.setenv("PROXY_TEST_UPSTREAM_KEY", UPSTREAM_KEY)
    with MockUpstream(api_key=UPSTREAM_KEY) as server:
        yield server


@pytest.fixture
def make_proxy(upstream: MockUpstream) -> Iterator[Callable[..., ProxyThread]]:
    started: list[ProxyThread] = []

    def make(**settings: Any) -> ProxyThread:
        proxy = ProxyThread(config_for(upstream, **settings)).start()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        proxy.stop()


@pytest.fixture
def proxy(make_proxy: Callable[..., ProxyThread]) -> ProxyThread:
    return make_proxy()


def client(proxy: ProxyThread, key: str = MASTER) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key=key, max_retries=0)


def chat(proxy: ProxyThread, key: str = MASTER, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
    payload = {"model": MODEL, "messages": MESSAGES, **body}
    return httpx.post(
        f"{proxy.base_url}/chat/completions", json=payload, headers={"Authorization": f"Bearer {key}", **(headers or {})}
    )


# ----- the OpenAI routes through the openai SDK ------------------------------------------------------


def test_chat_completion_miss_then_hit_with_the_sdk(proxy: ProxyThread, upstream: MockUpstream) -> None:
    sdk = client(proxy)
    first = sdk.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    second = sdk.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    assert first.headers["x-llmstash-cache"] == "MISS" and second.headers["x-llmstash-cache"] == "HIT"
    assert first.headers["x-llmstash-cache-key"] == second.headers["x-llmstash-cache-key"]
    one, two = first.parse(), second.parse()
    assert two.id == one.id and two.choices[0].message.content == one.choices[0].message.content
    assert one.usage is not None and one.usage.total_tokens > 0
    assert upstream.call_count("chat/completions") == 1
    assert upstream.calls[0].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"  # the config's key went upstream


def test_streaming_miss_then_replay_with_the_sdk(proxy: ProxyThread, upstream: MockUpstream) -> None:
    sdk = client(proxy)

    def stream(**extra: Any) -> tuple[str, list[Any]]:
        chunks = list(sdk.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, **extra))  # type: ignore[call-overload]
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks

    live_text, live = stream()
    replay_text, replay = stream()
    assert live_text == replay_text and live_text.startswith("Here is a careful answer")
    assert upstream.call_count("chat/completions") == 1
    assert live[0].id == replay[0].id
    assert all(c.usage is None for c in live + replay)  # the proxy asks for usage; it passes it on only when asked
    _, with_usage = stream(stream_options={"include_usage": True})
    assert with_usage[-1].usage is not None and with_usage[-1].usage.total_tokens > 0
    # a streamed and a non-streamed request share the entry
    whole = sdk.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    assert whole.choices[0].message.content == live_text and whole.id == live[0].id
    assert upstream.call_count("chat/completions") == 1


def test_stream_headers_say_hit_or_miss(proxy: ProxyThread) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    headers = {"Authorization": f"Bearer {MASTER}"}
    outcomes = []
    for _ in range(2):
        with httpx.stream("POST", f"{proxy.base_url}/chat/completions", json=body, headers=headers) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = [line for line in response.iter_lines() if line]
            outcomes.append(response.headers["x-llmstash-cache"])
        assert lines[-1] == "data: [DONE]"
        assert all(line.startswith("data: ") for line in lines)
    assert outcomes == ["MISS", "HIT"]


def test_text_completions_embeddings_transcriptions_and_models(proxy: ProxyThread, upstream: MockUpstream) -> None:
    sdk = client(proxy)
    texts = [sdk.completions.create(model=MODEL, prompt="Say hello") for _ in range(2)]
    assert texts[0].id == texts[1].id and upstream.call_count("/completions") - upstream.call_count("chat/completions") == 1
    streamed = "".join(c.choices[0].text for c in sdk.completions.create(model=MODEL, prompt="Say hello", stream=True))
    assert streamed == texts[0].choices[0].text

    first = sdk.embeddings.with_raw_response.create(model=MODEL, input=["alpha", "beta"])
    second = sdk.embeddings.with_raw_response.create(model=MODEL, input=["beta", "gamma", "alpha"])
    assert first.headers["x-llmstash-cache"] == "MISS" and second.headers["x-llmstash-cached-items"] == "2/3"
    vectors = {item.index: item.embedding for item in second.parse().data}
    assert vectors[0] == first.parse().data[1].embedding and vectors[2] == first.parse().data[0].embedding
    assert upstream.call_count("embeddings") == 2
    third = sdk.embeddings.with_raw_response.create(model=MODEL, input=["gamma"])
    assert third.headers["x-llmstash-cache"] == "HIT" and upstream.call_count("embeddings") == 2

    audio = b"RIFF\x00\x00fake-wave-bytes" * 10
    heard = [sdk.audio.transcriptions.create(model="whisper-1", file=("clip.wav", audio)) for _ in range(2)]
    assert heard[0].text == heard[1].text and upstream.call_count("audio/transcriptions") == 1
    as_text = sdk.audio.transcriptions.create(model="whisper-1", file=("clip.wav", audio), response_format="text")
    assert "Transcript of" in str(as_text)

    assert [m.id for m in sdk.models.list()] == [MODEL, "whisper-1"]
    assert httpx.get(f"{proxy.url}/health").json()["status"] == "healthy"


def test_curl_is_a_second_client(proxy: ProxyThread, upstream: MockUpstream) -> None:
    curl = ensure_command("curl", "curl")
    client(proxy).chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    result = subprocess.run(
        [
            curl,
            "-sS",
            "-D",
            "-",
            "--noproxy",
            "*",
            "-H",
            f"Authorization: Bearer {MASTER}",
            "-H",
            "Content-Type: application/json",
            "-d",
            json.dumps({"model": MODEL, "messages": MESSAGES}),
            f"{proxy.base_url}/chat/completions",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    head, _, body = result.stdout.replace("\r\n", "\n").partition("\n\n")
    assert "x-llmstash-cache: HIT" in head
    assert json.loads(body)["choices"][0]["message"]["content"].startswith("Here is a careful answer")
    assert upstream.call_count("chat/completions") == 1


# ----- cache controls: the body's cache object and the headers --------------------------------------


def test_cache_control_headers(proxy: ProxyThread, upstream: MockUpstream) -> None:
    first = chat(proxy).json()
    fresh = chat(proxy, headers={"Cache-Control": "no-cache"})
    assert fresh.headers["x-llmstash-cache"] == "MISS" and fresh.json()["id"] != first["id"]
    assert chat(proxy).json()["id"] == fresh.json()["id"]  # no-cache stored the fresh answer
    unstored = chat(proxy, headers={"Cache-Control": "no-cache, no-store"})
    assert unstored.json()["id"] != fresh.json()["id"] and chat(proxy).json()["id"] == fresh.json()["id"]
    assert chat(proxy, headers={"Cache-Control": "s-maxage=0"}).headers["x-llmstash-cache"] == "MISS"
    assert chat(proxy, headers={"Cache-Control": "s-maxage=3600"}).headers["x-llmstash-cache"] == "HIT"
    assert upstream.call_count("chat/completions") == 4


def test_ttl_and_namespace_headers_and_the_body_cache_object(proxy: ProxyThread, upstream: MockUpstream) -> None:
    assert chat(proxy, headers={"x-llmstash-ttl": "0"}).headers["x-llmstash-cache"] == "MISS"
    assert chat(proxy).headers["x-llmstash-cache"] == "MISS"  # ttl 0: the first answer was not kept
    spaced = chat(proxy, headers={"x-llmstash-namespace": "tenant-1"})
    assert spaced.headers["x-llmstash-cache"] == "MISS" and spaced.headers["x-llmstash-cache-key"].startswith("tenant-1:")
    assert chat(proxy, headers={"x-llmstash-namespace": "tenant-1"}).headers["x-llmstash-cache"] == "HIT"
    assert upstream.call_count("chat/completions") == 3
    sdk = client(proxy)
    raw = sdk.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES, extra_body={"cache": {"no-cache": True}})  # type: ignore[arg-type]
    assert raw.headers["x-llmstash-cache"] == "MISS" and upstream.call_count("chat/completions") == 4
    raw = sdk.chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES, extra_body={"cache": {"namespace": "tenant-1"}}
    )  # type: ignore[arg-type]
    assert raw.headers["x-llmstash-cache"] == "HIT"


@pytest.mark.parametrize(
    ("headers", "named", "allowed"),
    [
        ({"Cache-Control": "max-age=10"}, "Cache-Control", "no-cache, no-store, s-maxage"),
        ({"Cache-Control": "s-maxage=soon"}, "Cache-Control s-maxage", "seconds >= 0"),
        ({"x-llmstash-ttl": "-5"}, "x-llmstash-ttl", "seconds >= 0"),
        ({"x-llmstash-ttl": "forever"}, "x-llmstash-ttl", "seconds >= 0"),
        ({"x-llmstash-namespace": "no spaces!"}, "x-llmstash-namespace", "A-Z a-z 0-9"),
    ],
)
def test_bad_header_values_are_400_naming_the_header(
    proxy: ProxyThread, upstream: MockUpstream, headers: dict[str, str], named: str, allowed: str
) -> None:
    response = chat(proxy, headers=headers)
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert named in message and allowed in message
    assert upstream.call_count() == 0


def test_bad_bodies_are_clear_400s_and_never_reach_upstream(proxy: ProxyThread, upstream: MockUpstream) -> None:
    for body, named in [
        ({"api_base": "http://127.0.0.1:9/v1"}, "api_base"),  # a client must never redirect the upstream key
        ({"api_key": "sk-other"}, "api_key"),
        ({"extra_headers": {"x": "y"}}, "extra_headers"),
        ({"cache": {"ttl": "long"}}, "ttl"),
        ({"cache": {"frobnicate": True}}, "frobnicate"),
        ({"cache": "yes"}, "cache"),
    ]:
        response = chat(proxy, **body)
        assert response.status_code == 400, body
        assert named in response.json()["error"]["message"]
    missing = httpx.post(
        f"{proxy.base_url}/chat/completions", json={"model": MODEL}, headers={"Authorization": f"Bearer {MASTER}"}
    )
    assert missing.status_code == 400 and "messages" in missing.json()["error"]["message"]
    not_json = httpx.post(f"{proxy.base_url}/chat/completions", content=b"{oops", headers={"Authorization": f"Bearer {MASTER}"})
    assert not_json.status_code == 400
    with pytest.raises(openai.NotFoundError, match="gpt-5"):
        client(proxy).chat.completions.create(model="gpt-5", messages=MESSAGES)  # type: ignore[arg-type]
    assert upstream.call_count() == 0


def test_upstream_errors_pass_through_and_are_counted(proxy: ProxyThread, upstream: MockUpstream) -> None:
    upstream.fail_next(503, message="overloaded right now")
    with pytest.raises(openai.InternalServerError, match="overloaded right now"):
        client(proxy).chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    assert chat(proxy).headers["x-llmstash-cache"] == "MISS"  # the failure stored nothing
    metrics = httpx.get(f"{proxy.url}/metrics").text
    assert 'llmstash_proxy_upstream_errors_total{route="chat",model="gpt-4o-mini",status="503"} 1' in metrics


def test_a_failing_cache_backend_never_fails_a_request(make_proxy: Callable[..., ProxyThread], upstream: MockUpstream) -> None:
    proxy = make_proxy(cache_params={"type": "redis", "url": "redis://127.0.0.1:9/0"})  # nothing listens there
    for _ in range(2):
        response = chat(proxy)
        assert response.status_code == 200 and response.headers["x-llmstash-cache"] == "MISS"
    assert upstream.call_count("chat/completions") == 2
    assert 'llmstash_cache_errors_total{backend="redis"}' in httpx.get(f"{proxy.url}/metrics").text
    ping = httpx.get(f"{proxy.url}/cache/ping", headers={"Authorization": f"Bearer {MASTER}"})
    assert ping.status_code == 503 and ping.json()["status"] == "unhealthy"


# ----- auth and scopes --------------------------------------------------------------------------------


def test_requests_without_a_valid_key_get_401(proxy: ProxyThread, upstream: MockUpstream) -> None:
    for headers in ({}, {"Authorization": "Bearer sk-wrong-key-123"}, {"Authorization": "Basic abc"}):
        response = httpx.post(f"{proxy.base_url}/chat/completions", json={"model": MODEL, "messages": MESSAGES}, headers=headers)
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
    assert httpx.get(f"{proxy.base_url}/models").status_code == 401
    with pytest.raises(openai.AuthenticationError):
        client(proxy, key="sk-not-a-key-at-all").chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
    for key in (TEAM_A, TEAM_B):
        assert chat(proxy, key=key).status_code == 200
    assert (
        httpx.post(
            f"{proxy.base_url}/chat/completions", json={"model": MODEL, "messages": MESSAGES}, headers={"x-api-key": TEAM_A}
        ).status_code
        == 200
    )
    assert upstream.call_count("chat/completions") == 1  # shared scope: one entry for every key


def test_per_key_scope_isolates_each_keys_entries(make_proxy: Callable[..., ProxyThread], upstream: MockUpstream) -> None:
    proxy = make_proxy(cache_scope="per_key")
    a1, a2, b1 = chat(proxy, key=TEAM_A), chat(proxy, key=TEAM_A), chat(proxy, key=TEAM_B)
    assert [r.headers["x-llmstash-cache"] for r in (a1, a2, b1)] == ["MISS", "HIT", "MISS"]
    assert upstream.call_count("chat/completions") == 2
    key_a, key_b = a1.headers["x-llmstash-cache-key"], b1.headers["x-llmstash-cache-key"]
    assert key_a.startswith(scope_namespace(TEAM_A) + ":") and key_b.startswith(scope_namespace(TEAM_B) + ":")
    assert TEAM_A not in key_a and TEAM_B not in key_b
    # a namespace a client picks stays inside its own scope
    spaced = chat(proxy, key=TEAM_B, headers={"x-llmstash-namespace": scope_namespace(TEAM_A)})
    assert spaced.headers["x-llmstash-cache"] == "MISS"
    assert spaced.headers["x-llmstash-cache-key"].startswith(scope_namespace(TEAM_B) + "/")
    stored = list(proxy.proxy.cache.storage.keys())
    assert not any(secret in key for key in stored for secret in (TEAM_A, TEAM_B, MASTER))


def test_admin_routes_need_the_master_key(proxy: ProxyThread, upstream: MockUpstream) -> None:
    key = chat(proxy).headers["x-llmstash-cache-key"]
    admin = {"Authorization": f"Bearer {MASTER}"}
    for method, path in (("GET", "/cache/ping"), ("GET", "/cache/stats"), ("POST", "/cache/flushall"), ("POST", "/cache/delete")):
        assert httpx.request(method, f"{proxy.url}{path}", headers={"Authorization": f"Bearer {TEAM_A}"}).status_code == 403
        assert httpx.request(method, f"{proxy.url}{path}").status_code == 401
    assert httpx.get(f"{proxy.url}/cache/ping", headers=admin).json() == {"status": "healthy", "cache_type": "local"}
    stats = httpx.get(f"{proxy.url}/cache/stats", headers=admin).json()
    assert stats["entries"] == 1 and stats["cache"]["writes"] == 1 and stats["proxy"]["misses"] == 1
    bad = httpx.post(f"{proxy.url}/cache/delete", json={"keys": "all"}, headers=admin)
    assert bad.status_code == 400 and "keys" in bad.json()["error"]["message"]
    assert httpx.post(f"{proxy.url}/cache/delete", json={"keys": [key]}, headers=admin).json()["deleted"] == 1
    assert chat(proxy).headers["x-llmstash-cache"] == "MISS"
    assert chat(proxy).headers["x-llmstash-cache"] == "HIT"
    assert httpx.post(f"{proxy.url}/cache/flushall", headers=admin).json()["status"] == "success"
    assert chat(proxy).headers["x-llmstash-cache"] == "MISS"
    assert upstream.call_count("chat/completions") == 3


def test_metrics_in_prometheus_format(proxy: ProxyThread) -> None:
    for _ in range(3):
        chat(proxy)
    text = httpx.get(f"{proxy.url}/metrics").text
    assert 'llmstash_proxy_requests_total{route="chat",model="gpt-4o-mini",cache="hit"} 2' in text
    assert 'llmstash_proxy_requests_total{route="chat",model="gpt-4o-mini",cache="miss"} 1' in text
    assert "# TYPE llmstash_proxy_request_duration_seconds histogram" in text
    assert 'llmstash_proxy_request_duration_seconds_bucket{route="chat",cache="hit",le="+Inf"} 2' in text
    assert 'llmstash_proxy_upstream_duration_seconds_count{route="chat",model="gpt-4o-mini"} 1' in text
    assert 'llmstash_cache_hits_total{backend="local"} 2' in text
    assert 'llmstash_cache_entries{backend="local"} 1' in text
    usage = chat(proxy).json()["usage"]
    text = httpx.get(f"{proxy.url}/metrics").text
    assert f'llmstash_proxy_tokens_saved_total{{model="gpt-4o-mini"}} {3 * usage["total_tokens"]}' in text
    dollars = 3 * (usage["prompt_tokens"] * 0.000001 + usage["completion_tokens"] * 0.000002)
    line = next(line for line in text.splitlines() if line.startswith("llmstash_proxy_dollars_saved_total{"))
    assert float(line.split()[-1]) == pytest.approx(dollars)
    for line in text.splitlines():  # every sample line is "name{labels} number"
        if line and not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


def test_metrics_can_require_the_master_key(make_proxy: Callable[..., ProxyThread]) -> None:
    proxy = make_proxy(metrics_auth=True)
    assert httpx.get(f"{proxy.url}/metrics").status_code == 401
    assert httpx.get(f"{proxy.url}/metrics", headers={"Authorization": f"Bearer {MASTER}"}).status_code == 200


def test_no_secret_reaches_clients_or_logs(proxy: ProxyThread, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    sdk = client(proxy)
    for _ in range(2):
        raw = sdk.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
        seen += [raw.text, str(raw.headers)]
    seen.append("".join(c.model_dump_json() for c in sdk.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)))  # type: ignore[call-overload]
    admin = {"Authorization": f"Bearer {MASTER}"}
    for path in ("/metrics", "/cache/stats", "/ui/data", "/ui", "/v1/models", "/health"):
        response = httpx.get(f"{proxy.url}{path}", headers=admin)
        seen += [response.text, str(response.headers)]
    seen.append(chat(proxy, api_base="http://127.0.0.1:9").text)  # an error answer
    seen += [record.getMessage() for record in caplog.records]
    for text in seen:
        assert UPSTREAM_KEY not in text and MASTER not in text
        assert MESSAGES[0]["content"] not in text or text.startswith("{")  # only inside answers, never in logs or headers
    assert not any(MESSAGES[0]["content"] in record.getMessage() for record in caplog.records)


def test_config_errors_name_the_setting(upstream: MockUpstream, tmp_path: Any) -> None:
    from llmstash.exceptions import ConfigurationError
    from llmstash.proxy.config import load_config, parse_config

    good = config_for(upstream)
    cases = [
        ({**good, "litellm_settings": {**good["litellm_settings"], "cache_scope": "per_team"}}, "cache_scope"),
        ({**good, "litellm_settings": {**good["litellm_settings"], "cache": "yes"}}, "cache must be true or false"),
        ({**good, "litellm_settings": {"cache": True, "cache_params": {"type": "floppy"}}}, "floppy"),
        ({**good, "model_list": []}, "model_list"),
        ({**good, "general_settings": {"master_key": "os.environ/NOT_SET_ANYWHERE_42"}}, "NOT_SET_ANYWHERE_42"),
        ({**good, "general_settings": {"master_key": "short"}}, "master_key"),
        ({**good, "router_settings": {"timeout": -1}}, "router_settings.timeout"),
    ]
    for document, named in cases:
        with pytest.raises(ConfigurationError, match=named):
            ProxyThread(document) if "floppy" in named else parse_config(document)
    alias = {**good, "llmstash_settings": good["litellm_settings"]}
    del alias["litellm_settings"]
    assert parse_config(alias).cache_params == {"type": "local"}
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("model_list: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigurationError, match="not valid YAML"):
        load_config(unsafe)


def test_identical_concurrent_requests_make_one_upstream_call(proxy: ProxyThread, upstream: MockUpstream) -> None:
    upstream.delay = 0.3  # every request arrives while the first is in flight

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {MASTER}"}, timeout=30) as http:
            body = {"model": MODEL, "messages": MESSAGES}
            return await asyncio.gather(*(http.post(f"{proxy.base_url}/chat/completions", json=body) for _ in range(8)))

    answers = asyncio.run(burst())
    assert all(a.status_code == 200 for a in answers)
    assert len({a.json()["id"] for a in answers}) == 1
    assert sorted(a.headers["x-llmstash-cache"] for a in answers) == ["HIT"] * 7 + ["MISS"]
    assert upstream.call_count("chat/completions") == 1


def test_a_stream_cut_upstream_ends_with_an_error_event_and_stores_nothing(proxy: ProxyThread, upstream: MockUpstream) -> None:
    upstream.cut_next_stream(after_chunks=3)
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    with httpx.stream(
        "POST", f"{proxy.base_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {MASTER}"}
    ) as response:
        events = [line for line in response.iter_lines() if line]
    assert "error" in json.loads(events[-1].removeprefix("data: "))
    assert "data: [DONE]" not in events
    assert chat(proxy).headers["x-llmstash-cache"] == "MISS"  # the broken stream was not stored
    assert upstream.call_count("chat/completions") == 2


def test_unknown_routes_and_methods_answer_in_openai_error_shape(proxy: ProxyThread) -> None:
    missing = httpx.get(f"{proxy.base_url}/assistants")
    assert missing.status_code == 404 and "no route GET /v1/assistants" in missing.json()["error"]["message"]
    wrong = httpx.get(f"{proxy.base_url}/chat/completions")
    assert wrong.status_code == 405 and wrong.json()["error"]["type"] == "invalid_request_error"
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:  # a client announcing 65 MiB
        sock.sendall(
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {MASTER}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {65 * 2**20}\r\n\r\n{{}}".encode()
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 413")
