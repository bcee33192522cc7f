"""`llmstash serve` as a real process: several workers and several proxies sharing one Redis, and a
graceful shutdown (SIGTERM) that flushes writes still buffered by ``redis_flush_size``."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import openai
import redis
import yaml

from llmstash.testing import MockUpstream
from llmstash.testing.proxy import ProxyProcess

MASTER = "sk-master-0123456789"
MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Name three rivers in Europe."}]


def write_config(path: Path, upstream: MockUpstream, cache_params: dict[str, Any]) -> Path:
    document = {
        "model_list": [{"model_name": MODEL, "litellm_params": {"model": f"openai/{MODEL}", "api_base": upstream.base_url}}],
        "litellm_settings": {"cache": True, "cache_params": cache_params},
        "general_settings": {"master_key": MASTER},
    }
    path.write_text(yaml.safe_dump(document))
    return path


def ask(proxy: ProxyProcess) -> httpx.Response:
    response = httpx.post(
        f"{proxy.base_url}/chat/completions",
        json={"model": MODEL, "messages": MESSAGES},
        headers={"Authorization": f"Bearer {MASTER}"},
    )
    assert response.status_code == 200, response.text
    return response


def test_two_workers_and_two_proxies_share_one_redis(tmp_path: Path, upstream: MockUpstream, redis_url: str) -> None:
    config = write_config(tmp_path / "proxy.yaml", upstream, {"type": "redis", "url": redis_url, "namespace": "shared"})
    with ProxyProcess(config, workers=2) as first, ProxyProcess(config) as second:
        answers = [ask(first) for _ in range(6)] + [ask(second) for _ in range(3)]
        assert [a.headers["x-llmstash-cache"] for a in answers] == ["MISS"] + ["HIT"] * 8
        assert len({a.json()["id"] for a in answers}) == 1
        sdk = openai.OpenAI(base_url=second.base_url, api_key=MASTER, max_retries=0)
        streamed = "".join(
            c.choices[0].delta.content or ""
            for c in sdk.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
            if c.choices
        )  # type: ignore[call-overload]
        assert streamed == answers[0].json()["choices"][0]["message"]["content"]
        code, _ = first.terminate()
        assert code in (0, -signal.SIGTERM)
    assert upstream.call_count("chat/completions") == 1


def test_graceful_shutdown_flushes_buffered_writes(tmp_path: Path, upstream: MockUpstream, redis_url: str) -> None:
    config = write_config(tmp_path / "proxy.yaml", upstream, {"type": "redis", "url": redis_url, "redis_flush_size": 1000})
    client = redis.Redis.from_url(redis_url)
    with ProxyProcess(config) as proxy:
        key = ask(proxy).headers["x-llmstash-cache-key"]
        assert ask(proxy).headers["x-llmstash-cache"] == "HIT"  # this process reads its own buffered write
        assert client.get(f"llmstash:{key}") is None  # ... which has not reached Redis yet
        code, stderr = proxy.terminate()
    assert code in (0, -signal.SIGTERM), stderr  # uvicorn re-raises SIGTERM once it has shut down
    assert "Traceback" not in stderr
    assert client.get(f"llmstash:{key}") is not None
    with ProxyProcess(config) as fresh:  # a new process finds it
        assert ask(fresh).headers["x-llmstash-cache"] == "HIT"
    assert upstream.call_count("chat/completions") == 1


def test_serve_refuses_a_bad_config_with_a_clear_message(tmp_path: Path, upstream: MockUpstream, capsys: Any) -> None:
    from llmstash.cli import main

    config = write_config(tmp_path / "proxy.yaml", upstream, {"type": "local"})
    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text() + "router_settings: {timeout: soon}\n")
    assert main(["serve", "--config", str(bad)]) == 1
    assert "router_settings.timeout must be a positive number of seconds" in capsys.readouterr().err
    assert main(["serve", "--config", str(config), "--workers", "0"]) == 1
    assert "workers must be a positive integer" in capsys.readouterr().err
