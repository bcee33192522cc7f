"""Shared fixtures: a recording upstream on 127.0.0.1, a fake clock, and a clean llmstash state."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import llmstash
from llmstash.testing import MockUpstream
from llmstash.testing.servers import ValkeyCluster, ValkeyServer

# Nothing in the tests may leave this machine: an unconfigured call goes to a closed local port,
# and no stray REDIS_* variable points a test's Redis cache anywhere else.
for _name in (
    "OPENAI_API_KEY",
    "OPENAI_API_BASE",
    "AZURE_API_KEY",
    "AZURE_API_BASE",
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_API_KEY",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_PASSWORD",
    "REDIS_URL",
):
    os.environ.pop(_name, None)
os.environ["OPENAI_BASE_URL"] = "http://127.0.0.1:9/v1"
os.environ["NO_PROXY"] = "127.0.0.1,localhost"


class FakeClock:
    """A clock tests move by hand: ``clock.advance(10)``."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def upstream() -> Iterator[MockUpstream]:
    with MockUpstream() as server:
        yield server


@pytest.fixture(autouse=True)
def clean_state() -> Iterator[None]:
    """Every test starts and ends with no active cache and no callbacks."""
    llmstash.cache = None
    llmstash.callbacks = []
    yield
    if llmstash.cache is not None:
        llmstash.cache.close()
    llmstash.cache = None
    llmstash.callbacks = []


# ----- real servers, started once per test session and stopped by PID -----------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyServer]:
    server = ValkeyServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_password_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyServer]:
    server = ValkeyServer(tmp_path_factory.mktemp("redis-auth"), password="s3cret-pass").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyCluster]:
    cluster = ValkeyCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_url(redis_server: ValkeyServer) -> str:
    """A clean standalone server for this test."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def cluster_nodes(redis_cluster: ValkeyCluster) -> list[dict[str, object]]:
    """A clean 3-node cluster for this test."""
    redis_cluster.flush()
    return redis_cluster.startup_nodes
