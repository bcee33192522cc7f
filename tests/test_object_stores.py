"""S3, GCS and Azure Blob backends against real emulators on 127.0.0.1 (moto, gcp-storage-emulator,
Azurite), started by the harness: hits of every kind, other processes, TTL, layout, bad
configuration, and an emulator that dies or stalls mid-run.

The session emulators and a fresh bucket per test come from ``conftest``; the tests that kill or
pause an emulator start one of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import llmstash
from llmstash import acompletion, aembedding, completion, embedding
from llmstash.backends.objectstore import EXPIRES_METADATA, ObjectStorage
from llmstash.caching import Cache
from llmstash.exceptions import ConfigurationError
from llmstash.testing import MockUpstream
from llmstash.testing.object_servers import Azurite, GCSEmulator, MotoS3
from llmstash.testing.servers import ServerProcess

STORES = ["s3", "gcs", "azure-blob"]
OPTION_FIXTURES = {"s3": "s3_options", "gcs": "gcs_options", "azure-blob": "azure_options"}


def ask(upstream: MockUpstream, content: str = "What is the capital of France?", **kwargs: Any) -> Any:
    return completion(model="openai/demo", messages=[{"role": "user", "content": content}], api_base=upstream.base_url, **kwargs)


def object_names(cache: Cache) -> list[str]:
    """Every object the backend of ``cache`` sees under its prefix, straight from the store."""
    storage = cache.storage
    assert isinstance(storage, ObjectStorage)
    return storage._run(lambda client: sorted(storage._names(client, storage.prefix)))


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """(type, options) of a Cache on a fresh, empty bucket of one emulator."""
    options: dict[str, Any] = request.getfixturevalue(OPTION_FIXTURES[request.param])
    return request.param, options


def make(store: tuple[str, dict[str, Any]], **kwargs: Any) -> Cache:
    type_name, options = store
    return Cache(type=type_name, **options, **kwargs)


# ----- hits of every kind ------------------------------------------------------------------------


def test_completion_stream_and_embedding_batch_hits(store: tuple[str, dict[str, Any]], upstream: MockUpstream) -> None:
    llmstash.cache = make(store)
    first = ask(upstream)
    second = ask(upstream)
    assert (first._hidden_params["cache_hit"], second._hidden_params["cache_hit"]) == (False, True)
    assert second.model_dump() == first.model_dump()

    stream_args = dict(model="openai/demo", messages=[{"role": "user", "content": "Stream me."}], api_base=upstream.base_url)
    live = "".join(chunk.choices[0].delta.content or "" for chunk in completion(**stream_args, stream=True))
    replay_stream = completion(**stream_args, stream=True)
    assert replay_stream._hidden_params["cache_hit"] is True
    assert "".join(chunk.choices[0].delta.content or "" for chunk in replay_stream) == live
    assert upstream.call_count("chat/completions") == 2

    words = [f"item {i}" for i in range(12)]
    embedding(model="text-embedding-3-small", input=words[:6], api_base=upstream.base_url)
    batch = embedding(model="text-embedding-3-small", input=words, api_base=upstream.base_url)
    assert [item["index"] for item in batch.data] == list(range(12))
    assert batch._hidden_params["cached_items"] == 6
    sent = [call.body["input"] for call in upstream.calls if call.path.endswith("embeddings")]
    assert sent == [words[:6], words[6:]]  # only the missing half went upstream
    again = embedding(model="text-embedding-3-small", input=words, api_base=upstream.base_url)
    assert again._hidden_params["cache_hit"] is True
    assert [item["embedding"] for item in again.data] == [item["embedding"] for item in batch.data]
    assert upstream.call_count("embeddings") == 2
    assert llmstash.cache.stats()["errors"] == 0


def test_async_calls_and_concurrent_batch(store: tuple[str, dict[str, Any]], upstream: MockUpstream) -> None:
    llmstash.cache = make(store)

    async def scenario() -> None:
        kwargs = dict(model="openai/demo", api_base=upstream.base_url)
        firsts = await asyncio.gather(*(acompletion(messages=[{"role": "user", "content": f"q{i}"}], **kwargs) for i in range(8)))
        seconds = await asyncio.gather(
            *(acompletion(messages=[{"role": "user", "content": f"q{i}"}], **kwargs) for i in range(8))
        )
        assert [s._hidden_params["cache_hit"] for s in seconds] == [True] * 8
        assert [s.id for s in seconds] == [f.id for f in firsts]
        words = [f"async item {i}" for i in range(40)]
        await aembedding(model="text-embedding-3-small", input=words[::2], api_base=upstream.base_url)
        batch = await aembedding(model="text-embedding-3-small", input=words, api_base=upstream.base_url)
        assert batch._hidden_params["cached_items"] == 20

    asyncio.run(scenario())
    assert upstream.call_count("chat/completions") == 8
    assert upstream.call_count("embeddings") == 2
    assert llmstash.cache.stats()["errors"] == 0


CHILD_ASK = """
import json, sys
import llmstash
from llmstash.caching import Cache
type_name, options, base, content = sys.argv[1:5]
llmstash.cache = Cache(type=type_name, **json.loads(options))
answer = llmstash.completion(model="openai/demo", messages=[{"role": "user", "content": content}], api_base=base)
print(json.dumps({"id": answer.id, "cache_hit": answer._hidden_params["cache_hit"], "stats": llmstash.cache.stats()}))
"""


def run_child(*args: str) -> Any:
    done = subprocess.run([sys.executable, "-c", CHILD_ASK, *args], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_hit_in_another_process(store: tuple[str, dict[str, Any]], upstream: MockUpstream) -> None:
    type_name, options = store
    llmstash.cache = make(store)
    first = ask(upstream, "shared between processes")
    child = run_child(type_name, json.dumps(options), upstream.base_url, "shared between processes")
    assert child["cache_hit"] is True and child["id"] == first.id
    assert child["stats"]["errors"] == 0
    child = run_child(type_name, json.dumps(options), upstream.base_url, "asked by the child first")
    assert child["cache_hit"] is False
    here = ask(upstream, "asked by the child first")
    assert here._hidden_params["cache_hit"] is True and here.id == child["id"]
    assert upstream.call_count("chat/completions") == 2


# ----- TTL -----------------------------------------------------------------------------------------


def test_expired_object_is_a_miss_and_is_deleted(store: tuple[str, dict[str, Any]], clock: Any) -> None:
    cache = make(store, clock=clock, ttl=60)
    cache.add_cache({"answer": 42}, cache_key="short-lived")
    make(store, clock=clock).add_cache({"answer": 43}, cache_key="forever")  # same bucket, no TTL
    assert len(object_names(cache)) == 2
    clock.advance(59)
    assert cache.get_cache(cache_key="short-lived") == {"answer": 42}
    clock.advance(2)
    assert cache.get_cache(cache_key="short-lived") is None
    assert cache.storage.get("short-lived") is None  # gone from the bucket, not just hidden
    assert cache.get_cache(cache_key="forever") == {"answer": 43}
    assert len(object_names(cache)) == 1
    cache.close()


def test_ttl_is_stored_with_the_object(store: tuple[str, dict[str, Any]], clock: Any) -> None:
    cache = make(store, clock=clock, ttl=3600)
    cache.add_cache("value", cache_key="with-ttl")
    make(store, clock=clock).add_cache("value", cache_key="without-ttl")
    storage = cache.storage
    assert isinstance(storage, ObjectStorage)

    def metadata(key: str) -> dict[str, str]:
        name = storage.object_name(key)
        client = storage.client()
        if store[0] == "s3":
            return dict(client.head_object(Bucket=storage.bucket, Key=name)["Metadata"])  # type: ignore[attr-defined]
        if store[0] == "gcs":
            return dict(storage._bucket(client).get_blob(name).metadata or {})  # type: ignore[attr-defined]
        return dict(client.get_blob_client(name).get_blob_properties().metadata)

    assert float(metadata("with-ttl")[EXPIRES_METADATA]) == pytest.approx(clock() + 3600)
    assert EXPIRES_METADATA not in metadata("without-ttl")
    cache.close()


# ----- layout ------------------------------------------------------------------------------------


def test_path_prefix_and_clear_leave_other_objects_alone(store: tuple[str, dict[str, Any]], upstream: MockUpstream) -> None:
    type_name = store[0]
    path_option = {"s3": "s3_path", "gcs": "gcs_path", "azure-blob": "azure_path"}[type_name]
    mine = make(store, **{path_option: "/team-a/cache/"})
    other = make(store, **{path_option: "team-b"})
    llmstash.cache = mine
    ask(upstream)
    mine.add_cache("direct", cache_key="a/b.c d")
    llmstash.cache = other
    ask(upstream)
    assert upstream.call_count("chat/completions") == 2  # other paths do not share entries
    names = object_names(mine)
    assert len(names) == 2 and all(name.startswith("team-a/cache/llmstash/") for name in names), names
    assert any(name.endswith("a%2Fb%2Ec%20d") for name in names), names
    mine.flush_cache()
    assert object_names(mine) == []
    assert len(object_names(other)) == 1
    llmstash.cache = other
    assert ask(upstream)._hidden_params["cache_hit"] is True
    mine.close()


# ----- configuration errors and missing buckets -------------------------------------------------

BAD_NAMES = {
    "s3": ("s3_bucket_name", ["ab", "Upper", "under_score", "-start", "end-", "a..b", "192.168.1.1", "x" * 64]),
    "gcs": ("gcs_bucket_name", ["ab", "Upper", "google-ish", "goog-bucket", "-start", "x" * 64, "sp ace"]),
    "azure-blob": ("azure_blob_container", ["ab", "Upper", "double--dash", "-start", "end-", "under_score", "x" * 64]),
}


@pytest.mark.parametrize("type_name", STORES)
def test_invalid_bucket_names_are_rejected_at_construction(type_name: str) -> None:
    option, names = BAD_NAMES[type_name]
    required = {"azure-blob": {"azure_connection_string": "UseDevelopmentStorage=true"}}.get(type_name, {})
    for name in names:
        if type_name == "gcs" and name == "google-ish":
            continue  # only the 'goog' prefix is reserved
        with pytest.raises(ConfigurationError, match=option):
            Cache(type=type_name, **required, **{option: name})
    with pytest.raises(ConfigurationError, match=option):
        Cache(type=type_name, **required)  # no bucket at all


@pytest.mark.parametrize(
    ("type_name", "options", "message"),
    [
        ("s3", {"s3_bucket_name": "okay-name", "s3_endpoint_url": "127.0.0.1:9000"}, "s3_endpoint_url"),
        ("s3", {"s3_bucket_name": "okay-name", "s3_config": "fast"}, "s3_config"),
        ("s3", {"s3_bucket_name": "okay-name", "s3_path": 7}, "s3_path"),
        ("s3", {"s3_bucket_name": "okay-name", "object_store_threads": 0}, "object_store_threads"),
        ("s3", {"s3_bucket_name": "okay-name", "s3_bucket": "typo"}, "s3_bucket"),
        ("gcs", {"gcs_bucket_name": "okay-name", "gcs_path_service_account": "/no/such/file.json"}, "gcs_path_service_account"),
        ("azure-blob", {"azure_blob_container": "okay-name"}, "azure_account_url"),
        ("azure-blob", {"azure_blob_container": "okay-name", "azure_account_url": "myaccount"}, "azure_account_url"),
    ],
)
def test_bad_options_name_the_parameter(type_name: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Cache(type=type_name, **options)


def test_construction_does_no_io() -> None:
    started = time.monotonic()
    Cache(type="s3", s3_bucket_name="nowhere-bucket", s3_endpoint_url="http://127.0.0.1:9")
    Cache(type="gcs", gcs_bucket_name="nowhere-bucket")
    Cache(type="azure_blob", azure_account_url="http://127.0.0.1:9/acct", azure_blob_container="nowhere")
    assert time.monotonic() - started < 5  # generous: no connection was attempted


@pytest.fixture(params=STORES)
def missing_bucket(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Options naming a bucket that does not exist on a running emulator."""
    options = dict(request.getfixturevalue(OPTION_FIXTURES[request.param]))
    name_option = {"s3": "s3_bucket_name", "gcs": "gcs_bucket_name", "azure-blob": "azure_blob_container"}[request.param]
    options[name_option] = "llmstash-no-such-bucket"
    return request.param, options


def test_missing_bucket_fails_open(missing_bucket: tuple[str, dict[str, Any]], upstream: MockUpstream, caplog: Any) -> None:
    llmstash.cache = make(missing_bucket)
    for _ in range(3):
        answer = ask(upstream)
        assert answer.choices[0].message.content
        assert answer._hidden_params["cache_hit"] is False
        time.sleep(0.6)  # past the pause after a failure, so the store is tried again
    assert upstream.call_count("chat/completions") == 3
    stats = llmstash.cache.stats()
    assert stats["errors"] >= 3 and stats["hits"] == 0
    assert "failed" in caplog.text and "capital of France" not in caplog.text


@pytest.mark.parametrize("alias", ["azure-blob", "azure_blob"])
def test_azure_type_alias_and_connection_string_from_environment(
    alias: str, azurite: Azurite, azure_options: dict[str, Any], upstream: MockUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    llmstash.cache = Cache(type=alias, azure_blob_container=azure_options["azure_blob_container"])
    first = ask(upstream)
    assert ask(upstream).id == first.id
    assert upstream.call_count("chat/completions") == 1


def test_s3_config_dict_is_merged(s3_options: dict[str, Any], upstream: MockUpstream) -> None:
    llmstash.cache = Cache(type="s3", **s3_options, s3_config={"read_timeout": 5, "signature_version": "s3v4"})
    ask(upstream)
    assert ask(upstream)._hidden_params["cache_hit"] is True
    config = llmstash.cache.storage.client().meta.config  # type: ignore[attr-defined]
    assert (config.read_timeout, config.connect_timeout, config.signature_version) == (5, 1.0, "s3v4")


def test_secrets_stay_out_of_repr_and_logs(s3_options: dict[str, Any], caplog: Any) -> None:
    options = {**s3_options, "s3_aws_secret_access_key": "very-secret-key-123", "s3_bucket_name": "llmstash-no-such-bucket"}
    cache = Cache(type="s3", **options)
    assert "very-secret-key-123" not in repr(cache.storage)
    assert cache.get_cache(cache_key="anything") is None
    assert "very-secret-key-123" not in caplog.text


# ----- an emulator that dies or stalls mid-run --------------------------------------------------


@pytest.fixture(params=STORES)
def own_store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An emulator of this test's own (to kill, pause and restart), a way to (re)create its bucket,
    and the Cache options for that bucket."""
    bucket = "llmstash-own"
    server: ServerProcess
    prepare: Callable[[], None]
    if request.param == "s3":
        server = MotoS3(tmp_path).start()
        prepare, options = (lambda: server.create_bucket(bucket)), server.cache_options(bucket)  # type: ignore[attr-defined]
    elif request.param == "gcs":
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", os.environ.get("STORAGE_EMULATOR_HOST", ""))  # restored afterwards
        server = GCSEmulator(tmp_path).start()
        prepare, options = (lambda: server.create_bucket(bucket)), {"gcs_bucket_name": bucket}  # type: ignore[attr-defined]
    else:
        server = Azurite(tmp_path).start()
        prepare = lambda: server.create_container(bucket)  # type: ignore[attr-defined] # noqa: E731
        options = {"azure_connection_string": server.connection_string, "azure_blob_container": bucket}
    prepare()
    yield request.param, server, prepare, options
    server.stop()


def test_emulator_killed_mid_run_every_call_succeeds_and_hits_resume(own_store: Any, upstream: MockUpstream) -> None:
    type_name, server, prepare, options = own_store
    llmstash.cache = cache = Cache(type=type_name, **options)
    hits = []
    for i in range(60):
        if i == 30:
            server.kill()
        answer = ask(upstream, f"question {i % 5}")
        assert answer.choices[0].message.content
        hits.append(answer._hidden_params["cache_hit"])
    assert hits[:5] == [False] * 5 and all(hits[5:30])
    assert not any(hits[30:])
    assert cache.stats()["errors"] > 0

    server.restart()
    with contextlib.suppress(Exception):  # Azurite keeps its data (and its container); the others come back empty
        prepare()
    deadline = time.monotonic() + 10
    while not ask(upstream, "after the restart")._hidden_params["cache_hit"]:
        assert time.monotonic() < deadline, "no hit after the restart"
        time.sleep(0.1)


def test_emulator_paused_calls_still_answer(own_store: Any, upstream: MockUpstream) -> None:
    type_name, server, _prepare, options = own_store
    llmstash.cache = cache = Cache(type=type_name, **options)
    ask(upstream, "before the pause")
    assert ask(upstream, "before the pause")._hidden_params["cache_hit"] is True
    server.pause()
    try:
        answers = [ask(upstream, f"during the pause {i}") for i in range(3)]
        answers.append(
            asyncio.run(
                acompletion(
                    model="openai/demo", messages=[{"role": "user", "content": "async pause"}], api_base=upstream.base_url
                )
            )
        )
        assert all(answer.choices[0].message.content for answer in answers)
        assert not any(answer._hidden_params["cache_hit"] for answer in answers)
        assert cache.stats()["errors"] > 0
    finally:
        server.resume()
    deadline = time.monotonic() + 10
    while not ask(upstream, "before the pause")._hidden_params["cache_hit"]:
        assert time.monotonic() < deadline, "no hit after the resume"
        time.sleep(0.1)


# ----- Azure without a connection string: DefaultAzureCredential ------------------------------------


def _self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files (Azurite serves HTTPS with them)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "azurite-cert.pem", directory / "azurite-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def _unsigned_storage_token() -> str:
    """An Azure AD-shaped access token for Azure Storage (Azurite's basic OAuth mode checks its
    audience, issuer and lifetime, not its signature)."""
    import base64

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {
        "aud": "https://storage.azure.com",
        "iss": "https://sts.windows.net/00000000-0000-0000-0000-000000000001/",
        "iat": now - 60,
        "nbf": now - 60,
        "exp": now + 3600,
        "oid": "00000000-0000-0000-0000-000000000002",
        "tid": "00000000-0000-0000-0000-000000000001",
    }
    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


class FakeEndpoint:
    """A small HTTP server on 127.0.0.1, in a thread, standing in for a credential or storage
    endpoint: ``respond(method, path, headers, body)`` gives (status, JSON payload or None); every
    request is recorded as (method, path)."""

    def __init__(self, respond: Callable[[str, str, Any, bytes], tuple[int, dict[str, Any] | None]]) -> None:
        self.requests: list[tuple[str, str]] = []
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                endpoint.requests.append((self.command, self.path))
                status, payload = respond(self.command, self.path, self.headers, body)
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self) -> FakeEndpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


IDENTITY_SECRET = "identity-header-secret"


def managed_identity(method: str, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, Any] | None]:
    """An App Service-style managed-identity endpoint (``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER``):
    storage tokens for a caller that shows the header secret."""
    if headers.get("X-IDENTITY-HEADER") != IDENTITY_SECRET:
        return 401, None
    token = {"access_token": _unsigned_storage_token(), "expires_on": str(int(time.time()) + 3600)}
    return 200, {**token, "resource": "https://storage.azure.com", "token_type": "Bearer"}


def test_azure_default_credential_gets_a_token_from_managed_identity(
    tmp_path: Path, upstream: MockUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = _self_signed_certificate(tmp_path)
    azurite = Azurite(tmp_path, tls=(cert, key)).start()
    try:
        with FakeEndpoint(managed_identity) as identity:
            for name in (
                "AZURE_CLIENT_ID",
                "AZURE_CLIENT_SECRET",
                "AZURE_TENANT_ID",
                "AZURE_USERNAME",
                "AZURE_FEDERATED_TOKEN_FILE",
            ):
                monkeypatch.delenv(name, raising=False)
            monkeypatch.setenv("IDENTITY_ENDPOINT", identity.url + "/msi/token")
            monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_SECRET)
            monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))  # trust Azurite's certificate
            azurite.create_container("identity-cache")

            llmstash.cache = cache = Cache(
                type="azure-blob", azure_account_url=azurite.account_url, azure_blob_container="identity-cache"
            )
            first = ask(upstream, "asked with a managed identity")
            second = ask(upstream, "asked with a managed identity")
            assert second._hidden_params["cache_hit"] is True and second.id == first.id
            assert upstream.call_count("chat/completions") == 1
            assert cache.stats()["errors"] == 0
            assert identity.requests and all("resource=https" in path for _, path in identity.requests)
            storage = cache.storage
            assert type(storage.client().credential).__name__ == "DefaultAzureCredential"  # type: ignore[attr-defined]
    finally:
        azurite.stop()


# ----- credentials from the environment; a store that answers 5xx ------------------------------------


def test_s3_credentials_from_the_standard_chain(
    moto_s3: MotoS3, s3_options: dict[str, Any], upstream: MockUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-environment")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-environment-secret")
    options = {k: v for k, v in s3_options.items() if not k.startswith("s3_aws_")}
    llmstash.cache = cache = Cache(type="s3", **options)
    first = ask(upstream)
    assert ask(upstream).id == first.id
    assert cache.stats()["errors"] == 0
    credentials = cache.storage.client()._request_signer._credentials  # type: ignore[attr-defined]
    assert credentials.access_key == "from-environment"


@pytest.mark.parametrize("type_name", STORES)
def test_a_store_answering_5xx_fails_open(type_name: str, upstream: MockUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeEndpoint(lambda *request: (503, None)) as failing:  # a store in trouble
        if type_name == "s3":
            options: dict[str, Any] = {
                "s3_bucket_name": "troubled",
                "s3_endpoint_url": failing.url,
                "s3_region_name": "us-east-1",
                "s3_aws_access_key_id": "k",
                "s3_aws_secret_access_key": "s",
            }
        elif type_name == "gcs":
            monkeypatch.setenv("STORAGE_EMULATOR_HOST", failing.url)
            options = {"gcs_bucket_name": "troubled"}
        else:
            options = {
                "azure_connection_string": f"DefaultEndpointsProtocol=http;AccountName=a;AccountKey=a2V5;BlobEndpoint={failing.url}/a;",
                "azure_blob_container": "troubled",
            }
        llmstash.cache = cache = Cache(type=type_name, **options)
        for i in range(3):
            answer = ask(upstream, f"store in trouble {i}")
            assert answer.choices[0].message.content and answer._hidden_params["cache_hit"] is False
        assert upstream.call_count("chat/completions") == 3
        assert failing.requests  # the store was asked, and said 503
        assert cache.stats()["errors"] >= 1 and cache.stats()["hits"] == 0


def test_gcs_service_account_file(
    gcs_emulator: GCSEmulator, gcs_options: dict[str, Any], tmp_path: Path, upstream: MockUpstream
) -> None:
    """``gcs_path_service_account``: the key file's credentials sign a token request to its own
    ``token_uri`` (here a local endpoint), and the token goes with every storage request."""
    import urllib.parse

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    grants: list[str] = []

    def token_endpoint(method: str, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, Any]]:
        grants.append(urllib.parse.parse_qs(body.decode())["grant_type"][0])
        return 200, {"access_token": "local-token", "expires_in": 3600, "token_type": "Bearer"}

    token_server = FakeEndpoint(token_endpoint)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    account = tmp_path / "service-account.json"
    account.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "test",
                "private_key_id": "local",
                "private_key": pem.decode(),
                "client_email": "cache@test.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": f"{token_server.url}/token",
            }
        )
    )
    with token_server:
        llmstash.cache = cache = Cache(type="gcs", gcs_path_service_account=str(account), **gcs_options)
        first = ask(upstream, "asked with a service account")
        assert ask(upstream, "asked with a service account").id == first.id
        assert cache.stats()["errors"] == 0
        assert grants and set(grants) == {"urn:ietf:params:oauth:grant-type:jwt-bearer"}


@pytest.mark.parametrize(
    ("type_name", "module", "options", "extra"),
    [
        ("s3", "boto3", {"s3_bucket_name": "some-bucket"}, "llmstash[s3]"),
        ("gcs", "google.cloud.storage", {"gcs_bucket_name": "some-bucket"}, "llmstash[gcs]"),
        (
            "azure-blob",
            "azure.storage.blob",
            {"azure_blob_container": "some-bucket", "azure_connection_string": "x"},
            "llmstash[azure]",
        ),
    ],
)
def test_a_missing_sdk_names_the_extra_to_install(
    type_name: str, module: str, options: dict[str, Any], extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if the package were not installed
    with pytest.raises(ImportError, match=re.escape(extra)):  # when the Cache is made, not at its first call
        Cache(type=type_name, **options)
