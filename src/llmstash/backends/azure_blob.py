"""Azure Blob Storage storage on azure-storage-blob.

    Cache(type="azure-blob", azure_account_url="https://myaccount.blob.core.windows.net",
          azure_blob_container="llm-cache")

Credentials, first match wins: ``azure_connection_string`` (or the environment variable
``AZURE_STORAGE_CONNECTION_STRING``); ``azure_credential`` with ``azure_account_url`` (an account
key, a SAS token, or any azure-identity credential object); else ``DefaultAzureCredential`` from
azure-identity (environment, workload or managed identity, Azure CLI login). Requests time out
after 1 s to connect and 2 s to read, without retries. The container must exist; llmstash never
creates one. ``type="azure_blob"`` is the same backend. Object layout, expiry and failure
handling: ``llmstash.backends.objectstore``.
"""

from __future__ import annotations

import os
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

CONTAINER_PATTERN = r"(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]"
CONTAINER_RULE = "3-63 characters: lowercase letters, digits and single '-', starting and ending with a letter or digit"
CONNECTION_STRING_VARIABLE = "AZURE_STORAGE_CONNECTION_STRING"


class AzureBlobStorage(ObjectStorage):
    name = "azure-blob"
    sdk = ("azure.storage.blob", "azure-storage-blob", "azure")
    options = frozenset(
        {
            "azure_account_url",
            "azure_blob_container",
            "azure_connection_string",
            "azure_credential",
            "azure_path",
            "object_store_threads",
        }
    )

    def __init__(
        self,
        *,
        azure_account_url: str | None = None,
        azure_blob_container: str | None = None,
        azure_connection_string: str | None = None,
        azure_credential: Any = None,
        azure_path: str | None = None,
        object_store_threads: int = DEFAULT_THREADS,
        clock: Clock = time.time,
    ) -> None:
        if azure_blob_container is None:
            raise ConfigurationError('Cache(type="azure-blob") needs azure_blob_container, the name of an existing container')
        self.container = check_name("azure_blob_container", azure_blob_container, CONTAINER_PATTERN, CONTAINER_RULE)
        self.connection_string = azure_connection_string or (
            os.environ.get(CONNECTION_STRING_VARIABLE) if azure_account_url is None else None
        )
        if self.connection_string is None and azure_account_url is None:
            raise ConfigurationError(
                'Cache(type="azure-blob") needs azure_account_url ("https://<account>.blob.core.windows.net") '
                f"or azure_connection_string (or the environment variable {CONNECTION_STRING_VARIABLE})"
            )
        if azure_account_url is not None and not str(azure_account_url).startswith(("http://", "https://")):
            raise ConfigurationError(
                f"azure_account_url must start with https:// (or http:// for an emulator), got {azure_account_url!r}"
            )
        self.account_url = azure_account_url
        self._credential = azure_credential
        super().__init__(path=check_path("azure_path", azure_path), threads=check_threads(object_store_threads), clock=clock)

    def __repr__(self) -> str:
        where = self.account_url or "connection string"
        return f"AzureBlobStorage({where}, container={self.container!r}, prefix={self.prefix!r})"  # never a secret

    def _make_client(self) -> Any:
        from azure.storage import blob

        options: dict[str, Any] = {"connection_timeout": CONNECT_TIMEOUT, "read_timeout": READ_TIMEOUT, "retry_total": 0}
        if self.connection_string is not None:
            return blob.ContainerClient.from_connection_string(self.connection_string, self.container, **options)
        credential = self._credential
        if credential is None:
            try:
                from azure.identity import DefaultAzureCredential
            except ImportError:
                raise ImportError(
                    'Cache(type="azure-blob") without a connection string or azure_credential needs azure-identity: '
                    'pip install "llmstash[azure]"'
                ) from None
            credential = DefaultAzureCredential()
        assert self.account_url is not None  # checked when the backend was made
        return blob.ContainerClient(self.account_url, self.container, credential=credential, **options)

    def _reason(self, exc: Exception) -> str:
        code = getattr(exc, "error_code", None)
        return f"{type(exc).__name__} {code}" if code else type(exc).__name__

    @staticmethod
    def _blob_missing(exc: Exception) -> bool:
        """A missing blob (a miss), as opposed to a missing container (a failure)."""
        return getattr(exc, "error_code", None) == "BlobNotFound"

    def _read(self, client: Any, name: str) -> bytes | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            data: bytes = client.download_blob(name).readall()
        except ResourceNotFoundError as exc:
            if self._blob_missing(exc):
                return None
            raise
        return data

    def _write(self, client: Any, name: str, value: bytes, metadata: dict[str, str]) -> None:
        client.upload_blob(name, value, overwrite=True, metadata=metadata or None)

    def _remove(self, client: Any, name: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            client.delete_blob(name)
        except ResourceNotFoundError as exc:
            if not self._blob_missing(exc):
                raise

    def _names(self, client: Any, prefix: str) -> Iterable[str]:
        names: Iterable[str] = client.list_blob_names(name_starts_with=prefix)
        return names
