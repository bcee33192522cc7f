"""Object-store workloads: a cached completion answered from S3 (moto), GCS (gcp-storage-emulator)
and Azure Blob (Azurite), each emulator a child process on 127.0.0.1 started here.

An emulator's own latency dominates these figures, so each row also reports the floor: the same
object fetched with the raw SDK call (plus decoding the envelope), in blocks alternating with
llmstash's. LiteLLM's twin runs for S3 (its S3 cache takes an endpoint URL); its GCS and Azure
caches cannot be pointed at an emulator (GCS: its own client for storage.googleapis.com with a
service account; Azure: DefaultAzureCredential over HTTPS only), so those rows have no LiteLLM
column.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import workloads  # noqa: F401  (the library's workloads register first)
from common import Measurement, gc_paused, p50_p99_us, quietest, workload
from llmstash._core.envelope import decode
from llmstash.backends.objectstore import ObjectStorage
from llmstash.caching import Cache
from llmstash.testing.object_servers import Azurite, GCSEmulator, MotoS3, keep_cloud_sdks_local
from llmstash.testing.servers import ServerProcess
from workloads import HitOptions, _hit_workload

CALLS = 200  # timed hits per block (a few ms each against an emulator)
FLOOR_CALLS = 200
LITELLM_CALLS = 100
BUCKET = "llmstash-bench"


@contextmanager
def _emulator(kind: str) -> Iterator[tuple[ServerProcess, dict[str, Any]]]:
    """A running emulator with an empty bucket, and the ``Cache`` options for it."""
    keep_cloud_sdks_local()
    with tempfile.TemporaryDirectory(prefix=f"llmstash-bench-{kind}-") as workdir:
        server: Any
        if kind == "s3":
            server = MotoS3(Path(workdir)).start()
            server.create_bucket(BUCKET)
            options = server.cache_options(BUCKET)
        elif kind == "gcs":
            server = GCSEmulator(Path(workdir)).start()
            server.create_bucket(BUCKET)
            options = {"gcs_bucket_name": BUCKET}
        else:
            server = Azurite(Path(workdir)).start()
            server.create_container(BUCKET)
            options = {"azure_connection_string": server.connection_string, "azure_blob_container": BUCKET}
        try:
            yield server, options
        finally:
            server.stop()


def _floor(storage: ObjectStorage) -> list[list[int]]:
    """Blocks of raw SDK reads of the one stored object, each decoded: what any cache must pay."""
    names = storage._run(lambda client: list(storage._names(client, storage.prefix)))
    name = names[0]
    client = storage.client()

    def read() -> None:
        raw = storage._read(client, name)
        assert raw is not None
        decode(raw)

    blocks = []
    for _ in range(5):
        samples = []
        with gc_paused():
            for _ in range(FLOOR_CALLS):
                started = time.perf_counter_ns()
                read()
                samples.append(time.perf_counter_ns() - started)
        blocks.append(samples)
    return blocks


def _object_store_hit(kind: str, twin: bool) -> Measurement:
    with _emulator(kind) as (_server, options):
        cache = Cache(type=kind, **options)
        try:
            twin_options = HitOptions(litellm_calls=LITELLM_CALLS, litellm_warmup=20)
            if twin:
                twin_options = HitOptions(
                    litellm_calls=LITELLM_CALLS,
                    litellm_warmup=20,
                    twin_params={"s3_endpoint": options["s3_endpoint_url"], "s3_bucket": BUCKET},
                    litellm_what='`litellm.Cache(type="s3", s3_endpoint_url=<the same moto server>)`; ',
                )
            hit = _hit_workload(
                cache, CALLS, use_async=False, target=None, twin_name="s3-hit" if twin else None, options=twin_options
            )
            assert isinstance(cache.storage, ObjectStorage)
            floor_p50, _ = p50_p99_us(quietest(_floor(cache.storage)))
        finally:
            cache.close()
    floor = f"floor (raw SDK GET of the same object + decoding it) p50 {floor_p50:,.0f} µs, ratio {hit.p50 / floor_p50:.2f}x"
    return dataclasses.replace(hit, notes=f"{hit.notes}; {floor}")


def _register(kind: str, description: str, twin: bool) -> Callable[[], Measurement]:
    def run() -> Measurement:
        return _object_store_hit(kind, twin)

    run.__doc__ = description
    return workload(f"{kind}-hit", twin=twin)(run)


s3_hit = _register(
    "s3",
    '`llmstash.completion(...)` answered from `Cache(type="s3")` on a local moto server, beside the floor (a raw boto3 '
    'GET of the same object + decoding); LiteLLM: `litellm.Cache(type="s3")` on the same server.',
    twin=True,
)
gcs_hit = _register(
    "gcs",
    '`llmstash.completion(...)` answered from `Cache(type="gcs")` on a local gcp-storage-emulator, beside the floor '
    "(a raw google-cloud-storage download of the same object + decoding).",
    twin=False,
)
azure_blob_hit = _register(
    "azure-blob",
    '`llmstash.completion(...)` answered from `Cache(type="azure-blob")` on a local Azurite, beside the floor '
    "(a raw azure-storage-blob download of the same object + decoding).",
    twin=False,
)
