"""The disk backend: shared between processes, persistent, and never unpickling what it reads."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import diskcache
import pytest

import llmstash
from llmstash import completion
from llmstash.backends.disk import DiskStorage
from llmstash.caching import Cache
from llmstash.exceptions import CacheBackendError, ConfigurationError

MESSAGES = [{"role": "user", "content": "Name three rivers in Europe."}]
SRC = str(Path(__file__).resolve().parents[1] / "src")

CHILD = """
import json, sys
import llmstash
from llmstash.caching import Cache

base_url, cache_dir = sys.argv[1], sys.argv[2]
llmstash.cache = Cache(type="disk", disk_cache_dir=cache_dir)
response = llmstash.completion(model="openai/demo", messages=json.loads(sys.argv[3]), api_base=base_url)
print(json.dumps({"cache_hit": response._hidden_params["cache_hit"], "id": response.id,
                  "content": response.choices[0].message.content}))
llmstash.cache.close()
"""


def run_child(base_url: str, cache_dir: Path) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, "-c", CHILD, base_url, str(cache_dir), json.dumps(MESSAGES)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_second_process_gets_a_hit(upstream: Any, tmp_path: Path) -> None:
    cache_dir = tmp_path / "shared"
    llmstash.cache = Cache(type="disk", disk_cache_dir=str(cache_dir))
    first = completion(model="openai/demo", messages=MESSAGES, api_base=upstream.base_url)
    assert first._hidden_params["cache_hit"] is False

    child = run_child(upstream.base_url, cache_dir)
    assert child["cache_hit"] is True
    assert child["id"] == first.id
    assert child["content"] == first.choices[0].message.content
    assert upstream.call_count("chat/completions") == 1


def test_parent_hits_what_a_child_process_stored(upstream: Any, tmp_path: Path) -> None:
    cache_dir = tmp_path / "shared"
    child = run_child(upstream.base_url, cache_dir)
    assert child["cache_hit"] is False
    assert upstream.call_count("chat/completions") == 1

    llmstash.cache = Cache(type="disk", disk_cache_dir=str(cache_dir))
    response = completion(model="openai/demo", messages=MESSAGES, api_base=upstream.base_url)
    assert response._hidden_params["cache_hit"] is True
    assert response.id == child["id"]
    assert upstream.call_count("chat/completions") == 1


def test_entries_survive_closing_and_reopening(upstream: Any, tmp_path: Path) -> None:
    cache_dir = str(tmp_path / "persist")
    with Cache(type="disk", disk_cache_dir=cache_dir) as cache:
        llmstash.cache = cache
        first = completion(model="openai/demo", messages=MESSAGES, api_base=upstream.base_url)
        cache.add_cache({"kept": [1, 2, 3]}, cache_key="direct")
    llmstash.cache = None

    reopened = Cache(type="disk", disk_cache_dir=cache_dir)
    llmstash.cache = reopened
    again = completion(model="openai/demo", messages=MESSAGES, api_base=upstream.base_url)
    assert again._hidden_params["cache_hit"] is True
    assert again.id == first.id
    assert reopened.get_cache(cache_key="direct") == {"kept": [1, 2, 3]}
    assert upstream.call_count("chat/completions") == 1


def test_storage_survives_close_and_reopen(tmp_path: Path) -> None:
    storage = DiskStorage(disk_cache_dir=tmp_path / "db")
    storage.set("k", b"\x00bytes\xff", None)
    storage.close()
    storage.close()  # closing twice is fine
    assert DiskStorage(disk_cache_dir=tmp_path / "db").get("k") == b"\x00bytes\xff"
    assert storage.get("k") == b"\x00bytes\xff"  # a closed storage reopens on next use
    storage.close()


def test_constructor_does_no_io(tmp_path: Path) -> None:
    directory = tmp_path / "not-yet"
    storage = DiskStorage(disk_cache_dir=directory)
    Cache(type="disk", disk_cache_dir=str(directory))
    assert not directory.exists()
    storage.set("k", b"v", None)
    assert directory.is_dir()
    storage.close()


# ----- never unpickle --------------------------------------------------------------------------


class Canary:
    """Unpickling this creates ``marker``: proof that a stored pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def plant_pickle(directory: Path, key: str, marker: Path) -> None:
    plain = diskcache.Cache(str(directory))
    plain.set(key, Canary(marker))
    plain.close()


@pytest.mark.parametrize("large", [False, True], ids=["in-db", "in-file"])
def test_storage_refuses_to_unpickle(tmp_path: Path, large: bool) -> None:
    directory, marker = tmp_path / "db", tmp_path / "UNPICKLED"
    key = "planted"
    plain = diskcache.Cache(str(directory))
    # a pickle beyond diskcache's min_file_size lives in a file rather than in SQLite
    plain.set(key, [Canary(marker), "x" * (100_000 if large else 1)])
    plain.close()

    storage = DiskStorage(disk_cache_dir=directory)
    with pytest.raises(CacheBackendError):
        storage.get(key)
    with pytest.raises(CacheBackendError):
        storage.get_many(["missing", key])
    assert not marker.exists()
    storage.close()
    # the canary is live: a plain (unpickling) read does run it
    plain = diskcache.Cache(str(directory))
    plain.get(key)
    plain.close()
    assert marker.exists()


@pytest.mark.parametrize("value", ["a str", 12345, 1.5], ids=["str", "int", "float"])
def test_non_bytes_values_are_refused(tmp_path: Path, value: Any) -> None:
    plain = diskcache.Cache(str(tmp_path / "db"))
    plain.set("k", value)
    plain.close()
    storage = DiskStorage(disk_cache_dir=tmp_path / "db")
    with pytest.raises(CacheBackendError):
        storage.get("k")
    storage.close()


def test_planted_pickle_is_a_counted_error_and_a_miss(upstream: Any, tmp_path: Path) -> None:
    directory, marker = tmp_path / "db", tmp_path / "UNPICKLED"
    llmstash.cache = Cache(type="disk", disk_cache_dir=str(directory))
    kwargs = dict(model="openai/demo", messages=MESSAGES, api_base=upstream.base_url)
    key = llmstash.cache.get_cache_key(**kwargs)
    plant_pickle(directory, key, marker)

    response = completion(**kwargs)
    assert response._hidden_params["cache_hit"] is False
    assert upstream.call_count("chat/completions") == 1
    assert llmstash.cache.stats()["errors"] == 1
    assert not marker.exists()
    # the fresh answer replaced the planted entry
    again = completion(**kwargs)
    assert again._hidden_params["cache_hit"] is True and again.id == response.id
    assert upstream.call_count("chat/completions") == 1


def test_planted_pickle_through_direct_api_and_async(tmp_path: Path) -> None:
    import asyncio

    directory, marker = tmp_path / "db", tmp_path / "UNPICKLED"
    cache = Cache(type="disk", disk_cache_dir=str(directory))
    plant_pickle(directory, "k", marker)
    assert cache.get_cache(cache_key="k") is None
    assert asyncio.run(cache.async_get_cache(cache_key="k")) is None
    assert cache.stats()["errors"] == 2
    assert not marker.exists()
    cache.close()


# ----- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, 1.5, "1000", True, 10**6 + 0.0])
def test_bad_max_disk_bytes(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_disk_bytes"):
        DiskStorage(disk_cache_dir=tmp_path, max_disk_bytes=bad)
    with pytest.raises(ConfigurationError, match="max_disk_bytes"):
        Cache(type="disk", disk_cache_dir=str(tmp_path), max_disk_bytes=bad)


@pytest.mark.parametrize("bad", [0, -0.5, "1", True, float("nan"), float("inf"), 10.0**7])
def test_bad_disk_timeout(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="disk_timeout"):
        DiskStorage(disk_cache_dir=tmp_path, disk_timeout=bad)
    with pytest.raises(ConfigurationError, match="disk_timeout"):
        Cache(type="disk", disk_cache_dir=str(tmp_path), disk_timeout=bad)


def test_good_disk_options_are_used(tmp_path: Path) -> None:
    cache = Cache(type="disk", disk_cache_dir=str(tmp_path), max_disk_bytes=10_000_000, disk_timeout=0.25)
    assert isinstance(cache.storage, DiskStorage)
    assert (cache.storage.max_bytes, cache.storage.timeout) == (10_000_000, 0.25)
    cache.add_cache("v", cache_key="k")
    assert cache.get_cache(cache_key="k") == "v"
    cache.close()


def test_unknown_disk_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="max_memory_bytes"):
        Cache(type="disk", disk_cache_dir=str(tmp_path), max_memory_bytes=10)
