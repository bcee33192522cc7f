"""Google Cloud Storage storage on google-cloud-storage.

    Cache(type="gcs", gcs_bucket_name="my-llm-cache", gcs_path_service_account="sa.json", gcs_path="cache/")

Credentials: the service-account JSON file ``gcs_path_service_account`` when given, else
application-default credentials. ``STORAGE_EMULATOR_HOST`` (``http://127.0.0.1:9023``) points the
client at an emulator, as everywhere in Google's SDK. Requests time out after 1 s to connect and
2 s to read, without retries. Each thread gets a client of its own (the SDK's HTTP session is not
promised to be thread-safe). The bucket must exist; llmstash never creates one. Object layout,
expiry and failure handling: ``llmstash.backends.objectstore``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterable
from typing import Any

from llmstash.backends.base import Clock
from llmstash.backends.objectstore import (
    CONNECT_TIMEOUT,
    DEFAULT_THREADS,
    READ_TIMEOUT,
    ObjectStorage,
    check_name,
    check_path,
    check_threads,
)
from llmstash.exceptions import ConfigurationError

BUCKET_PATTERN = r"(?!goog)(?!\d+\.\d+\.\d+\.\d+$)[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]"
BUCKET_RULE = (
    "3-63 characters (up to 222 with dots): lowercase letters, digits, '-', '_' and '.', "
    "starting and ending with a letter or digit, not starting with 'goog', not an IP address"
)
TIMEOUT = (CONNECT_TIMEOUT, READ_TIMEOUT)


class GCSStorage(ObjectStorage):
    name = "gcs"
    sdk = ("google.cloud.storage", "google-cloud-storage", "gcs")
    options = frozenset({"gcs_bucket_name", "gcs_path_service_account", "gcs_path", "object_store_threads"})

    def __init__(
        self,
        *,
        gcs_bucket_name: str | None = None,
        gcs_path_service_account: str | os.PathLike[str] | None = None,
        gcs_path: str | None = None,
        object_store_threads: int = DEFAULT_THREADS,
        clock: Clock = time.time,
    ) -> None:
        if gcs_bucket_name is None:
            raise ConfigurationError('Cache(type="gcs") needs gcs_bucket_name, the name of an existing bucket')
        self.bucket_name = check_name("gcs_bucket_name", gcs_bucket_name, BUCKET_PATTERN, BUCKET_RULE)
        if "." not in self.bucket_name and len(self.bucket_name) > 63:
            raise ConfigurationError(f"gcs_bucket_name {self.bucket_name!r} is not a valid name: {BUCKET_RULE}")
        if gcs_path_service_account is not None and not os.path.isfile(gcs_path_service_account):
            raise ConfigurationError(
                f"gcs_path_service_account must be the path of a service-account JSON file; {os.fspath(gcs_path_service_account)!r} is not a file"
            )
        self.service_account = gcs_path_service_account
        super().__init__(path=check_path("gcs_path", gcs_path), threads=check_threads(object_store_threads), clock=clock)
        self._bucket_exists = False

    def __repr__(self) -> str:
        return f"GCSStorage(bucket={self.bucket_name!r}, prefix={self.prefix!r})"

    def _make_client(self) -> Any:
        return threading.local()  # each thread makes its bucket handle (and client) in _bucket

    def _bucket(self, per_thread: Any) -> Any:
        bucket = getattr(per_thread, "bucket", None)
        if bucket is None:
            from google.cloud import storage

            if self.service_account is not None:
                client = storage.Client.from_service_account_json(os.fspath(self.service_account))
            else:
                client = storage.Client()
            bucket = per_thread.bucket = client.bucket(self.bucket_name)
        return bucket

    def _read(self, client: Any, name: str) -> bytes | None:
        from google.api_core.exceptions import NotFound

        bucket = self._bucket(client)
        try:
            data: bytes = bucket.blob(name).download_as_bytes(timeout=TIMEOUT, retry=None)
        except NotFound:
            # GCS says 404 for a missing object and a missing bucket alike; the latter is a failure
            if not self._bucket_exists:
                if not bucket.exists(timeout=TIMEOUT, retry=None):
                    raise
                self._bucket_exists = True
            return None
        self._bucket_exists = True
        return data

    def _write(self, client: Any, name: str, value: bytes, metadata: dict[str, str]) -> None:
        blob = self._bucket(client).blob(name)
        if metadata:
            blob.metadata = metadata
        blob.upload_from_string(value, content_type="application/octet-stream", timeout=TIMEOUT, retry=None)

    def _remove(self, client: Any, name: str) -> None:
        from google.api_core.exceptions import NotFound

        with contextlib.suppress(NotFound):
            self._bucket(client).blob(name).delete(timeout=TIMEOUT, retry=None)

    def _names(self, client: Any, prefix: str) -> Iterable[str]:
        for blob in self._bucket(client).client.list_blobs(self.bucket_name, prefix=prefix, timeout=TIMEOUT, retry=None):
            yield blob.name
