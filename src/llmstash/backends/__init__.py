"""Storage backends, looked up by the ``type=`` name given to ``Cache``.

Each backend lives in its own module and is imported only when a Cache of its type is made,
so optional dependencies (redis, boto3, ...) are needed only by those who use them.
"""

from __future__ import annotations

import importlib

from llmstash.backends.base import Storage
from llmstash.exceptions import ConfigurationError

REGISTRY: dict[str, str] = {
    "local": "llmstash.backends.memory:MemoryStorage",
    "disk": "llmstash.backends.disk:DiskStorage",
    "redis": "llmstash.backends.redis:RedisStorage",
    "s3": "llmstash.backends.s3:S3Storage",
    "gcs": "llmstash.backends.gcs:GCSStorage",
    "azure-blob": "llmstash.backends.azure_blob:AzureBlobStorage",
    "azure_blob": "llmstash.backends.azure_blob:AzureBlobStorage",
    "semantic": "llmstash.semantic.tier:EmbeddedSemanticStorage",
    "redis-semantic": "llmstash.semantic.tier:RedisSemanticStorage",
    "qdrant-semantic": "llmstash.semantic.tier:QdrantSemanticStorage",
    "dual-semantic": "llmstash.semantic.tier:DualSemanticStorage",
}
"""``type=`` name → ``module:Class`` of the backend."""

PLANNED: tuple[str, ...] = ()
"""Types of the LiteLLM dialect that this release does not provide yet."""


def storage_class(type_name: object) -> type[Storage]:
    """The backend class for a ``type=`` name; a clear error for unknown or unavailable names."""
    if not isinstance(type_name, str) or type_name not in REGISTRY:
        available = sorted(REGISTRY)
        if type_name in PLANNED:
            raise ConfigurationError(
                f"Cache(type={type_name!r}) is not available in this release of llmstash; available types: {available}"
            )
        raise ConfigurationError(f"unknown cache type {type_name!r}; valid types: {available}")
    module_name, _, class_name = REGISTRY[type_name].partition(":")
    cls: type[Storage] = getattr(importlib.import_module(module_name), class_name)
    return cls


__all__ = ["REGISTRY", "Storage", "storage_class"]
