"""The command line against a proxy config's cache: stats, inspect, purge, export and import (safe:
JSON lines of base64 entries, each checked by the envelope decoder), and the backends' keys()."""

from __future__ import annotations

import base64
import io
import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

import llmstash
from llmstash._core.envelope import encode
from llmstash.backends.disk import DiskStorage
from llmstash.backends.memory import MemoryStorage
from llmstash.backends.redis import RedisStorage
from llmstash.caching import Cache
from llmstash.cli import Progress, main, table
from llmstash.testing import MockUpstream

MODEL = "openai/gpt-4o-mini"


def write_config(path: Path, cache_params: dict[str, Any]) -> str:
    document = {
        "model_list": [{"model_name": "gpt-4o-mini", "litellm_params": {"model": MODEL}}],
        "litellm_settings": {"cache": True, "cache_params": cache_params},
    }
    path.write_text(yaml.safe_dump(document))
    return str(path)


def fill(cache_params: dict[str, Any], upstream: MockUpstream) -> list[str]:
    """Three chat answers (one in namespace team-x) and an embedding item; their keys."""
    llmstash.cache = Cache(**cache_params)
    keys = []
    for question, namespace in (("first question", None), ("second question", None), ("team question", "team-x")):
        answer = llmstash.completion(
            model=MODEL,
            messages=[{"role": "user", "content": question}],
            api_base=upstream.base_url,
            cache={"namespace": namespace} if namespace else None,
        )
        keys.append(answer._hidden_params["cache_key"])
    llmstash.embedding(model=MODEL, input=["a vector"], api_base=upstream.base_url)
    llmstash.cache.close()
    llmstash.cache = None
    return keys


@pytest.fixture
def disk_config(tmp_path: Path) -> tuple[str, dict[str, Any]]:
    params = {"type": "disk", "disk_cache_dir": str(tmp_path / "cache")}
    return write_config(tmp_path / "disk.yaml", params), params


def test_stats_and_inspect(
    disk_config: tuple[str, dict[str, Any]], upstream: MockUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    config, params = disk_config
    keys = fill(params, upstream)
    assert main(["stats", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "entries" in out and " 4" in out
    assert "chat" in out and "embedding-item" in out and "team-x" in out
    assert main(["stats", "--config", config, "--namespace", "team-x"]) == 0
    assert "entries                   1" in capsys.readouterr().out

    assert main(["inspect", "--config", config, keys[0]]) == 0
    shown = capsys.readouterr().out
    assert "chat" in shown and "Here is a careful answer about: first question" in shown and "never" in shown
    assert main(["inspect", "--config", config, "no-such-key"]) == 1
    assert "no entry under key 'no-such-key'" in capsys.readouterr().err


def test_purge_a_namespace_then_everything(
    disk_config: tuple[str, dict[str, Any]], upstream: MockUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    config, params = disk_config
    fill(params, upstream)
    assert main(["purge", "--config", config]) == 1  # no terminal to ask: --yes is required
    assert "--yes" in capsys.readouterr().err
    assert main(["purge", "--config", config, "--namespace", "team-x", "--yes"]) == 0
    assert "deleted 1 entries in namespace 'team-x'" in capsys.readouterr().out
    storage = DiskStorage(disk_cache_dir=params["disk_cache_dir"])
    assert len(list(storage.keys())) == 3 and not list(storage.keys("team-x:"))
    assert main(["purge", "--config", config, "--yes"]) == 0
    assert "deleted 3 entries" in capsys.readouterr().out
    assert list(storage.keys()) == []
    storage.close()


def test_export_from_disk_and_import_into_redis(
    tmp_path: Path,
    disk_config: tuple[str, dict[str, Any]],
    upstream: MockUpstream,
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, params = disk_config
    keys = fill(params, upstream)
    exported = tmp_path / "entries.jsonl"
    assert main(["export", "--config", config, str(exported)]) == 0
    lines = exported.read_text().splitlines()
    assert json.loads(lines[0])["format"] == "llmstash-export" and len(lines) == 5
    assert all(set(json.loads(line)) == {"key", "entry"} for line in lines[1:])

    redis_params = {"type": "redis", "url": redis_url}
    redis_config = write_config(tmp_path / "redis.yaml", redis_params)
    assert main(["import", "--config", redis_config, str(exported)]) == 0
    assert "imported 4 entries" in capsys.readouterr().out
    llmstash.cache = Cache(**redis_params)
    again = llmstash.completion(model=MODEL, messages=[{"role": "user", "content": "first question"}], api_base=upstream.base_url)
    assert again._hidden_params["cache_hit"] and again._hidden_params["cache_key"] == keys[0]
    assert upstream.call_count("chat/completions") == 3  # only fill() went upstream
    team_only = tmp_path / "team.jsonl"
    assert main(["export", "--config", redis_config, str(team_only), "--namespace", "team-x"]) == 0
    assert len(team_only.read_text().splitlines()) == 2


def test_import_checks_every_entry_and_never_unpickles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "memory.yaml", {"type": "disk", "disk_cache_dir": str(tmp_path / "cache")})

    class Boom:
        def __reduce__(self) -> Any:
            return (Path(tmp_path / "pwned").touch, ())

    good = encode("value", {"answer": 42}, 1_700_000_000.0, None)
    expired = encode("value", {"answer": 0}, 1_700_000_000.0, 1_700_000_001.0)
    lines = [
        json.dumps({"format": "llmstash-export", "version": 1}),
        json.dumps({"key": "good", "entry": base64.b64encode(good).decode()}),
        json.dumps({"key": "expired", "entry": base64.b64encode(expired).decode()}),
        json.dumps({"key": "pickle", "entry": base64.b64encode(pickle.dumps(Boom())).decode()}),
        json.dumps({"key": "truncated", "entry": base64.b64encode(good[:-5]).decode()}),
        json.dumps({"key": "not-base64", "entry": "@@@"}),
        json.dumps({"key": 7, "entry": base64.b64encode(good).decode()}),
        "not json at all",
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert main(["import", "--config", config, str(path)]) == 0
    out = capsys.readouterr().out
    assert "imported 1 entries" in out and "skipped 6 damaged or expired" in out
    assert not (tmp_path / "pwned").exists()
    storage = DiskStorage(disk_cache_dir=str(tmp_path / "cache"))
    assert list(storage.keys()) == ["good"]
    storage.close()
    path.write_text(lines[1] + "\n")
    assert main(["import", "--config", config, str(path)]) == 1
    assert "not an llmstash export" in capsys.readouterr().err


def test_cli_errors_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    off = tmp_path / "off.yaml"
    off.write_text(yaml.safe_dump({"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m"}}]}))
    assert main(["stats", "--config", str(off)]) == 1
    assert "caching is off" in capsys.readouterr().err
    assert main(["stats", "--config", str(tmp_path / "missing.yaml")]) == 1
    assert "cannot read the config file" in capsys.readouterr().err


def test_the_installed_command_runs(disk_config: tuple[str, dict[str, Any]], upstream: MockUpstream) -> None:
    config, params = disk_config
    fill(params, upstream)
    result = subprocess.run(
        [sys.executable, "-m", "llmstash", "stats", "--config", config], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "disk" in result.stdout and "chat" in result.stdout


def test_progress_bar_and_table() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    assert list(Progress("copying", 3, stream).track(["a", "b", "c"])) == ["a", "b", "c"]
    assert "copying" in stream.getvalue() and "100.0%" in stream.getvalue() and "3/3" in stream.getvalue()
    quiet = io.StringIO()
    list(Progress("copying", 3, quiet).track("abc"))
    assert quiet.getvalue() == ""  # not a terminal: no bar
    lines = table(("kind", "entries"), [("chat", "1,200"), ("embedding-item", "7")]).splitlines()
    assert lines[0].startswith("kind") and lines[2].endswith("1,200") and lines[3].endswith("    7")


@pytest.mark.parametrize("backend", ["local", "disk", "redis"])
def test_storage_keys_lists_by_prefix(backend: str, tmp_path: Path, redis_url: str) -> None:
    storage: Any
    if backend == "local":
        storage = MemoryStorage()
    elif backend == "disk":
        storage = DiskStorage(disk_cache_dir=str(tmp_path / "d"))
    else:
        storage = RedisStorage(url=redis_url, redis_flush_size=10)
    for key in ("a:1", "a:2", "b:1", "a*:3"):
        storage.set(key, b"v", None)
    assert sorted(storage.keys()) == ["a*:3", "a:1", "a:2", "b:1"]
    assert sorted(storage.keys("a:")) == ["a:1", "a:2"]  # glob characters are literal
    assert sorted(storage.keys("a*")) == ["a*:3"]
    storage.close()


def test_stats_of_a_running_proxy(tmp_path: Path, upstream: MockUpstream, capsys: pytest.CaptureFixture[str]) -> None:
    from llmstash.testing.proxy import ProxyThread

    document = {
        "model_list": [{"model_name": "gpt-4o-mini", "litellm_params": {"model": MODEL, "api_base": upstream.base_url}}],
        "litellm_settings": {"cache": True, "cache_params": {"type": "local"}},
        "general_settings": {"master_key": "sk-master-0123456789"},
    }
    config = tmp_path / "proxy.yaml"
    config.write_text(yaml.safe_dump(document))
    with ProxyThread(document) as proxy:
        for _ in range(4):
            httpx.post(
                f"{proxy.base_url}/chat/completions",
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]},
                headers={"Authorization": "Bearer sk-master-0123456789"},
            )
        assert main(["stats", "--config", str(config), "--proxy", proxy.url]) == 0
    out = capsys.readouterr().out
    assert "hit rate" in out and "75.0%" in out and "sk-master" not in out
    assert main(["stats", "--config", str(config), "--proxy", "http://127.0.0.1:9"]) == 1
    assert "cannot reach the proxy" in capsys.readouterr().err
