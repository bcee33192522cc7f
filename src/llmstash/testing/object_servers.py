"""Object-storage emulators for tests and benchmarks: moto (S3), gcp-storage-emulator (GCS) and
Azurite (Azure Blob), each a child process on 127.0.0.1, started and stopped by PID.

Call :func:`keep_cloud_sdks_local` before any cloud client is built: the SDKs otherwise probe
instance-metadata addresses (169.254.169.254) when they look for credentials.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import httpx

from llmstash.testing.servers import ServerProcess

AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
"""Azurite's well-known development account key (public, documented by Microsoft)."""


def keep_cloud_sdks_local() -> None:
    """Point every credential probe of the AWS, Google and Azure SDKs at a closed local port."""
    os.environ.update(
        {
            "NO_GCE_CHECK": "true",
            "GCE_METADATA_HOST": "127.0.0.1:1",
            "GCE_METADATA_IP": "127.0.0.1:1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AZURE_POD_IDENTITY_AUTHORITY_HOST": "http://127.0.0.1:1",
        }
    )
    for name in ("IMDS_ENDPOINT", "MSI_ENDPOINT", "AWS_PROFILE", "AWS_CONFIG_FILE", "GOOGLE_APPLICATION_CREDENTIALS"):
        os.environ.pop(name, None)


def _answers(url: str) -> bool:
    return httpx.get(url, timeout=1.0).status_code < 500


class MotoS3(ServerProcess):
    """moto's server mode: an S3 API on ``endpoint_url`` (any keys, region us-east-1)."""

    label = "moto"

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]

    def ready(self) -> bool:
        return _answers(f"{self.endpoint_url}/moto-api/")

    def client(self) -> object:
        import boto3

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)  # type: ignore[attr-defined]

    def cache_options(self, bucket: str) -> dict[str, object]:
        """``Cache(type="s3", **options)`` for a bucket on this server."""
        return {
            "s3_bucket_name": bucket,
            "s3_endpoint_url": self.endpoint_url,
            "s3_region_name": "us-east-1",
            "s3_aws_access_key_id": "testing",
            "s3_aws_secret_access_key": "testing",
        }


class GCSEmulator(ServerProcess):
    """gcp-storage-emulator, in memory. Sets ``STORAGE_EMULATOR_HOST`` for this process when started
    (the Google SDK reads it)."""

    label = "gcs"

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # The emulator serves one request at a time with a listen backlog of 5, so a burst of concurrent
    # requests (a batch read) saw connect timeouts; it is started with a backlog of 128.
    LAUNCH = (
        "import sys, http.server; http.server.HTTPServer.request_queue_size = 128; "
        "from gcp_storage_emulator.__main__ import main; sys.argv[0] = 'gcp-storage-emulator'; sys.exit(main())"
    )

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-c",
            self.LAUNCH,
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--in-memory",
            "--quiet",
        ]

    def ready(self) -> bool:
        return _answers(f"{self.endpoint_url}/storage/v1/b")

    def start(self, timeout: float = 20.0) -> GCSEmulator:
        os.environ["STORAGE_EMULATOR_HOST"] = self.endpoint_url
        return super().start(timeout)

    def create_bucket(self, name: str) -> None:
        from google.cloud import storage

        storage.Client(project="test").create_bucket(name)


def azurite_executable() -> str:
    """azurite-blob from ``make test``'s npm install (``<venv>/node``), else from PATH."""
    local = Path(sys.prefix) / "node" / "node_modules" / ".bin" / "azurite-blob"
    found = str(local) if local.exists() else shutil.which("azurite-blob")
    if found is None:
        raise RuntimeError("azurite-blob not found: `make test` installs it with npm into .venv/node")
    return found


class Azurite(ServerProcess):
    """Azurite's blob service, keeping its data in the work directory (it survives a restart).

    With ``tls=(certificate, key)`` (PEM files) it serves HTTPS and accepts OAuth bearer tokens
    besides the account key (``--oauth basic``: Azurite checks a token's audience, issuer and
    lifetime, not its signature), which is what Azure AD credentials such as
    ``DefaultAzureCredential`` need: the SDK sends tokens over HTTPS only."""

    label = "azurite"

    def __init__(self, workdir: Path, tls: tuple[Path, Path] | None = None) -> None:
        super().__init__(workdir)
        self.tls = tls

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def account_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol={self.scheme};AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={self.account_url};"
        )

    def command(self) -> list[str]:
        return [
            azurite_executable(),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(self.port),
            "--location",
            str(self.workdir / "data"),
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--silent",
            *(["--cert", str(self.tls[0]), "--key", str(self.tls[1]), "--oauth", "basic"] if self.tls else []),
        ]

    def ready(self) -> bool:
        return httpx.get(f"{self.account_url}?comp=list", timeout=1.0, verify=False).status_code < 500

    def create_container(self, name: str) -> None:
        from azure.storage.blob import BlobServiceClient

        BlobServiceClient.from_connection_string(self.connection_string).create_container(name)
