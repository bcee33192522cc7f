"""Amazon S3 (and S3-compatible stores: MinIO, Ceph, R2, ...) storage on boto3.

    Cache(type="s3", s3_bucket_name="my-llm-cache", s3_region_name="us-west-2", s3_path="cache/")

Credentials: ``s3_aws_access_key_id``/``s3_aws_secret_access_key``/``s3_aws_session_token`` when
given, else boto3's standard chain (environment, shared config files, instance roles).
``s3_endpoint_url`` points at any S3-compatible server. ``s3_config`` (a ``botocore.config.Config``
or a dict of its keywords) is merged over llmstash's defaults: connect timeout 1 s, read timeout
2 s, one attempt, as many pooled connections as ``object_store_threads``. The bucket must exist;
llmstash never creates one. Object layout, expiry and failure handling: ``llmstash.backends.objectstore``.
"""

from __future__ import annotations

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

BUCKET_PATTERN = r"(?!\d+\.\d+\.\d+\.\d+$)(?!xn--)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
BUCKET_RULE = (
    "3-63 characters: lowercase letters, digits, '.' and '-', starting and ending with a letter or digit, not an IP address"
)


class S3Storage(ObjectStorage):
    name = "s3"
    sdk = ("boto3", "boto3", "s3")
    options = frozenset(
        {
            "s3_bucket_name",
            "s3_region_name",
            "s3_api_version",
            "s3_path",
            "s3_use_ssl",
            "s3_verify",
            "s3_endpoint_url",
            "s3_aws_access_key_id",
            "s3_aws_secret_access_key",
            "s3_aws_session_token",
            "s3_config",
            "object_store_threads",
        }
    )

    def __init__(
        self,
        *,
        s3_bucket_name: str | None = None,
        s3_region_name: str | None = None,
        s3_api_version: str | None = None,
        s3_path: str | None = None,
        s3_use_ssl: bool = True,
        s3_verify: bool | str | None = None,
        s3_endpoint_url: str | None = None,
        s3_aws_access_key_id: str | None = None,
        s3_aws_secret_access_key: str | None = None,
        s3_aws_session_token: str | None = None,
        s3_config: Any = None,
        object_store_threads: int = DEFAULT_THREADS,
        clock: Clock = time.time,
    ) -> None:
        if s3_bucket_name is None:
            raise ConfigurationError('Cache(type="s3") needs s3_bucket_name, the name of an existing bucket')
        self.bucket = check_name("s3_bucket_name", s3_bucket_name, BUCKET_PATTERN, BUCKET_RULE)
        if ".." in self.bucket or ".-" in self.bucket or "-." in self.bucket:
            raise ConfigurationError(f"s3_bucket_name {self.bucket!r} is not a valid name: {BUCKET_RULE}")
        if s3_endpoint_url is not None and not str(s3_endpoint_url).startswith(("http://", "https://")):
            raise ConfigurationError(f"s3_endpoint_url must start with http:// or https://, got {s3_endpoint_url!r}")
        if s3_config is not None and not isinstance(s3_config, dict) and not hasattr(s3_config, "merge"):
            raise ConfigurationError("s3_config must be a botocore.config.Config or a dict of its keywords")
        super().__init__(path=check_path("s3_path", s3_path), threads=check_threads(object_store_threads), clock=clock)
        self.region = s3_region_name
        self.endpoint_url = s3_endpoint_url
        self._client_kwargs: dict[str, Any] = {
            "region_name": s3_region_name,
            "api_version": s3_api_version,
            "use_ssl": s3_use_ssl,
            "verify": s3_verify,
            "endpoint_url": s3_endpoint_url,
            "aws_access_key_id": s3_aws_access_key_id,
            "aws_secret_access_key": s3_aws_secret_access_key,
            "aws_session_token": s3_aws_session_token,
        }
        self._user_config = s3_config

    def __repr__(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"S3Storage(bucket={self.bucket!r}, prefix={self.prefix!r}{where})"  # never the keys

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            retries={"total_max_attempts": 1},
            max_pool_connections=self.threads,
        )
        if self._user_config is not None:
            user = Config(**self._user_config) if isinstance(self._user_config, dict) else self._user_config
            config = config.merge(user)
        kwargs = {name: value for name, value in self._client_kwargs.items() if value is not None}
        # a session of its own: boto3's default session is shared and not thread-safe to set up
        return boto3.session.Session().client("s3", config=config, **kwargs)

    def _reason(self, exc: Exception) -> str:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None
        return f"{type(exc).__name__} {code}" if code else type(exc).__name__

    def _read(self, client: Any, name: str) -> bytes | None:
        try:
            response = client.get_object(Bucket=self.bucket, Key=name)
        except client.exceptions.NoSuchKey:
            return None
        body: bytes = response["Body"].read()
        return body

    def _write(self, client: Any, name: str, value: bytes, metadata: dict[str, str]) -> None:
        client.put_object(Bucket=self.bucket, Key=name, Body=value, Metadata=metadata)

    def _remove(self, client: Any, name: str) -> None:
        client.delete_object(Bucket=self.bucket, Key=name)  # S3 answers 204 for a missing key too

    def _names(self, client: Any, prefix: str) -> Iterable[str]:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", ()):
                yield item["Key"]
