"""Security: nothing leaks (logs, keys, stored entries), tenants are isolated, stored data is inert.

Distinctive marker strings stand for the secrets and payloads; every check scans for them in the
raw material itself: every log record of every logger at DEBUG, the canonical key documents, and
the raw bytes held in memory, in the disk cache's files and in Redis.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import logging
import pathlib
import pickle
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import diskcache
import pytest
import redis

import llmstash
from llmstash import acompletion, aembedding, atext_completion, completion, embedding, text_completion, transcription
from llmstash._core import keys as keys_module
from llmstash.backends import storage_class
from llmstash.backends.base import Storage
from llmstash.backends.memory import MemoryStorage
from llmstash.caching import Cache
from llmstash.integrations.custom_logger import CustomLogger
from llmstash.testing import MockUpstream
from llmstash.testing.servers import ValkeyCluster, ValkeyServer, free_port

PROMPT = "PROMPT-MARKER-5f1e the violet heron asks"
RESPONSE = "RESPONSE-MARKER-8c2d the heron answers"
EMBED = "EMBED-MARKER-41b0 vectors of the quiet lake"
API_KEY = "sk-APIKEY-MARKER-77aa0c"
PASSWORD = "s3cret-pass"  # the password-protected server's (conftest)
WRONG_PASSWORD = "WRONG-PASSWORD-MARKER-19"
AD_TOKEN = "AD-TOKEN-MARKER-e3"
SECRETS = (API_KEY, "APIKEY-MARKER", PASSWORD, WRONG_PASSWORD, AD_TOKEN)
PAYLOADS = ("PROMPT-MARKER", "RESPONSE-MARKER", "EMBED-MARKER")
SRC = Path(__file__).resolve().parents[1] / "src" / "llmstash"


def slow_when_asked(body: dict[str, Any]) -> float:
    return 0.3 if "SLOW" in json.dumps(body) else 0.0


@pytest.fixture(scope="module")
def keyed_upstream() -> Iterator[MockUpstream]:
    """An upstream that requires API_KEY (so the key really is sent), slow for prompts with SLOW."""
    with MockUpstream(api_key=API_KEY, delay=slow_when_asked) as server:
        yield server


@pytest.fixture
def upstream(keyed_upstream: MockUpstream) -> MockUpstream:
    keyed_upstream.reset()
    return keyed_upstream


def chat(upstream: MockUpstream, text: str = PROMPT, **kwargs: Any) -> dict[str, Any]:
    return dict(
        model="openai/demo", messages=[{"role": "user", "content": text}], api_base=upstream.base_url, api_key=API_KEY, **kwargs
    )


def embed(upstream: MockUpstream, items: list[str], **kwargs: Any) -> dict[str, Any]:
    return dict(model="openai/text-embedding-3-small", input=items, api_base=upstream.base_url, api_key=API_KEY, **kwargs)


# ----- capturing every log record ------------------------------------------------------------------


@contextlib.contextmanager
def every_log_record() -> Iterator[list[logging.LogRecord]]:
    """Every record any logger makes while the block runs, at any level: every logger is enabled
    at DEBUG (whatever its level, ``disabled`` flag or ``logging.disable``), and records are
    taken before handlers, filters or propagation can drop them."""
    records: list[logging.LogRecord] = []
    lock = threading.Lock()
    real_handle, real_enabled = logging.Logger.handle, logging.Logger.isEnabledFor

    def handle(self: logging.Logger, record: logging.LogRecord) -> None:
        with lock:
            records.append(record)
        real_handle(self, record)

    logging.Logger.handle = handle  # type: ignore[method-assign]
    logging.Logger.isEnabledFor = lambda self, level: True  # type: ignore[method-assign]
    try:
        yield records
    finally:
        logging.Logger.handle = real_handle  # type: ignore[method-assign]
        logging.Logger.isEnabledFor = real_enabled  # type: ignore[method-assign]


def record_text(record: logging.LogRecord) -> str:
    """All the text a record carries: message, arguments, exception, stack and extra fields."""
    try:
        parts = [record.getMessage()]
    except Exception:
        parts = [str(record.msg)]
    parts += [repr(record.msg), repr(record.args), record.name]
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    if record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(record.stack_info)
    standard = logging.LogRecord("", 0, "", 0, "", None, None).__dict__
    parts += [f"{name}={value!r}" for name, value in record.__dict__.items() if name not in standard]
    return "\n".join(parts)


def leaks(records: Sequence[logging.LogRecord], markers: Sequence[str]) -> list[tuple[str, str, str]]:
    found = []
    for record in records:
        text = record_text(record)
        found += [(marker, record.name, text[:300]) for marker in markers if marker in text]
    return found


def test_the_capture_sees_every_logger_at_every_level() -> None:
    """The control for the scan below: a quiet, non-propagating, disabled third-party logger's
    DEBUG record with a marker in its arguments is caught, and the scanner finds the marker."""
    quiet = logging.getLogger("some.quiet.library")
    quiet.setLevel(logging.CRITICAL)
    quiet.propagate = False
    quiet.disabled = True
    with every_log_record() as records:
        quiet.debug("connecting with %s", {"password": PASSWORD})
        logging.getLogger("llmstash").debug("prompt was %r", PROMPT)
    assert {marker for marker, _, _ in leaks(records, [PASSWORD, "PROMPT-MARKER"])} == {PASSWORD, "PROMPT-MARKER"}
    assert leaks(records, [API_KEY]) == []
    assert not quiet.isEnabledFor(logging.ERROR)  # and everything is as it was afterwards
    quiet.disabled = False


# ----- the run that exercises every path -------------------------------------------------------------


class Raising(CustomLogger):
    """A callback that raises on every event, with the payload in its messages."""

    def log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        raise RuntimeError(f"callback saw {kwargs.get('messages')} and {API_KEY}")

    def log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        raise ValueError(f"failure callback saw {kwargs}")

    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        raise RuntimeError(f"async callback saw {response_obj}")


class LeakyBroken(Storage):
    """A backend whose every operation raises, with keys, values and secrets in the message."""

    name = "leaky-broken"

    def _fail(self, *details: Any) -> Any:
        raise ConnectionError(f"backend down with {API_KEY} {PASSWORD} while handling {details!r}")

    def get(self, key: str) -> bytes | None:
        return self._fail(key)  # type: ignore[no-any-return]

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        self._fail(key, value)

    def delete(self, key: str) -> None:
        self._fail(key)

    def clear(self, prefix: str = "") -> None:
        self._fail(prefix)


class NotALogger:
    """Not a CustomLogger: skipped with one warning."""


def wait_for_cluster_ok(cluster: ValkeyCluster, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if all(b"cluster_state:ok" in node.client().execute_command("CLUSTER", "INFO") for node in cluster.nodes):  # type: ignore[no-untyped-call]
                return
        except redis.exceptions.RedisError:
            pass
        assert time.monotonic() < deadline, "the cluster did not return to cluster_state:ok"
        time.sleep(0.1)


def use(cache: Cache | None) -> Cache | None:
    llmstash.cache = cache
    return cache


def calls_of_every_kind(upstream: MockUpstream, tag: str) -> None:
    """Chat (sync, async, streamed both ways), text, an embedding batch, a transcription: each
    twice, so that the second one is a hit."""
    for _ in range(2):
        completion(**chat(upstream, f"{PROMPT} {tag}"))
        asyncio.run(acompletion(**chat(upstream, f"{PROMPT} {tag} async")))
        list(completion(**chat(upstream, f"{PROMPT} {tag} stream", stream=True)))

        async def astream() -> None:
            stream = await acompletion(**chat(upstream, f"{PROMPT} {tag} astream", stream=True))
            async for _chunk in stream:
                pass

        asyncio.run(astream())
        text_completion(model="openai/demo", prompt=f"{PROMPT} {tag} text", api_base=upstream.base_url, api_key=API_KEY)
        asyncio.run(
            atext_completion(model="openai/demo", prompt=f"{PROMPT} {tag} atext", api_base=upstream.base_url, api_key=API_KEY)
        )
        embedding(**embed(upstream, [f"{EMBED} {tag} 1", f"{EMBED} {tag} 2"]))
        asyncio.run(aembedding(**embed(upstream, [f"{EMBED} {tag} 2", f"{EMBED} {tag} 3"])))
        transcription(
            model="whisper-1",
            file=("speech.wav", b"RIFF" + tag.encode() * 50),
            prompt=f"{PROMPT} {tag} audio",
            api_base=upstream.base_url,
            api_key=API_KEY,
        )
        completion(**chat(upstream, f"{PROMPT} {tag} mocked", mock_response=f"{RESPONSE} {tag}"))


def stampede(upstream: MockUpstream, tag: str) -> None:
    """Identical calls at once (threads, then tasks): one leads, the others are coalesced."""
    kwargs = chat(upstream, f"{PROMPT} {tag} SLOW")
    threads = [threading.Thread(target=completion, kwargs=kwargs) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    async def tasks() -> None:
        await asyncio.gather(*(acompletion(**chat(upstream, f"{PROMPT} {tag} SLOW async")) for _ in range(4)))

    asyncio.run(tasks())


def damaged_entries(cache: Cache, upstream: MockUpstream, tag: str) -> None:
    """Undecodable entries under a call's key and under a custom key made of prompt text."""
    kwargs = chat(upstream, f"{PROMPT} {tag} damaged")
    cache.storage.set(cache.get_cache_key(**kwargs), b"LS\x01" + PROMPT.encode() + API_KEY.encode(), None)
    completion(**kwargs)
    custom = f"custom key holding {PROMPT} {tag}"
    cache.storage.set(custom, b"garbage " + RESPONSE.encode(), None)
    assert cache.get_cache(cache_key=custom) is None
    cache.add_cache({"answer": f"{RESPONSE} {tag}"}, cache_key=custom)
    assert cache.get_cache(cache_key=custom) == {"answer": f"{RESPONSE} {tag}"}


def test_no_payload_or_secret_in_any_log_record(upstream: MockUpstream, tmp_path: Path, redis_cluster: ValkeyCluster) -> None:
    auth_server = ValkeyServer(tmp_path / "auth", password=PASSWORD).start()
    cluster_nodes = redis_cluster.startup_nodes
    redis_cluster.flush()
    made: list[Cache] = []

    def cache(**options: Any) -> Cache:
        made.append(Cache(**options))
        return made[-1]

    try:
        with every_log_record() as records:
            llmstash.callbacks = [Raising(), NotALogger()]

            # memory: every kind of call, misses and hits, streams, batches, stampedes, upstream errors
            memory = use(cache(namespace="tenant-a"))
            assert memory is not None
            calls_of_every_kind(upstream, "memory")
            stampede(upstream, "memory")
            damaged_entries(memory, upstream, "memory")
            upstream.fail_next(500, message=f"upstream refused {PROMPT}")
            with pytest.raises(llmstash.InternalServerError):
                completion(**chat(upstream, f"{PROMPT} failing"))
            with pytest.raises(llmstash.AuthenticationError):
                completion(**{**chat(upstream, f"{PROMPT} wrong key"), "api_key": "sk-wrong"})
            azure = dict(api_base=upstream.azure_base, api_key=API_KEY, azure_ad_token=AD_TOKEN)
            completion(model="azure/deployment", messages=[{"role": "user", "content": f"{PROMPT} azure"}], **azure)
            # an answer too big to keep, and one JSON cannot hold (a lone surrogate)
            use(cache(max_item_bytes=300))
            completion(**chat(upstream, f"{PROMPT} oversized", mock_response=f"{RESPONSE} " * 40))
            completion(**chat(upstream, f"{PROMPT} surrogate", mock_response=f"{RESPONSE} \ud800"))
            # a backend that fails every operation, with secrets in its exception messages
            broken = use(cache())
            assert broken is not None
            broken.storage = LeakyBroken()
            calls_of_every_kind(upstream, "broken")
            broken.add_cache({"answer": RESPONSE}, cache_key=f"direct {PROMPT}")
            broken.get_cache(cache_key=f"direct {PROMPT}")

            # disk: calls, a damaged entry, a planted pickle, and a directory that cannot be opened
            disk = use(cache(type="disk", disk_cache_dir=str(tmp_path / "disk")))
            assert disk is not None
            calls_of_every_kind(upstream, "disk")
            damaged_entries(disk, upstream, "disk")
            planted = chat(upstream, f"{PROMPT} pickled")
            plain = diskcache.Cache(str(tmp_path / "disk"))
            plain.set(disk.get_cache_key(**planted), {"pickled": RESPONSE, "key": API_KEY})
            plain.close()
            completion(**planted)
            (tmp_path / "a-file").write_text("not a directory")
            use(cache(type="disk", disk_cache_dir=str(tmp_path / "a-file" / "cache")))
            completion(**chat(upstream, f"{PROMPT} unopenable disk"))

            # redis with a password, in every spelling; then the server dies mid-use
            use(cache(type="redis", host="127.0.0.1", port=auth_server.port, password=PASSWORD))
            calls_of_every_kind(upstream, "redis")
            stampede(upstream, "redis")
            redis_url = use(cache(type="redis", url=auth_server.url, namespace="tenant-b"))
            assert redis_url is not None
            damaged_entries(redis_url, upstream, "redis")
            buffered = use(cache(type="redis", url=auth_server.url, redis_flush_size=100))
            assert buffered is not None
            completion(**chat(upstream, f"{PROMPT} buffered", mock_response=RESPONSE))
            use(cache(type="redis", host="127.0.0.1", port=auth_server.port, password=WRONG_PASSWORD))
            completion(**chat(upstream, f"{PROMPT} wrong password"))
            auth_server.kill()
            use(redis_url)
            calls_of_every_kind(upstream, "redis down")
            buffered.close()  # its buffered write cannot be sent: logged
            auth_server.start()

            # redis cluster: calls and hits, then a cluster none of whose nodes answers
            cluster = use(cache(type="redis", redis_startup_nodes=cluster_nodes))
            assert cluster is not None
            calls_of_every_kind(upstream, "cluster")
            damaged_entries(cluster, upstream, "cluster")
            use(cache(type="redis", redis_startup_nodes=[{"host": "127.0.0.1", "port": free_port(55536)}]))
            calls_of_every_kind(upstream, "cluster down")
            # the cluster stalls (every node SIGSTOPped for ~1 s, below its node timeout) while a
            # value is written under a short custom key, then while a prompt-made key is read
            for stalled_operation in (
                lambda: cluster.add_cache({"answer": RESPONSE}, cache_key="k"),
                lambda: cluster.get_cache(cache_key=f"custom key holding {PROMPT}"),
            ):
                time.sleep(0.6)  # past the moment Redis is skipped after the last failure
                for node in redis_cluster.nodes:
                    node.pause()
                try:
                    stalled_operation()
                finally:
                    for node in redis_cluster.nodes:
                        node.resume()

            for made_cache in made:
                made_cache.close()
            use(None)
    finally:
        auth_server.stop()
        wait_for_cluster_ok(redis_cluster)

    messages = [record_text(record) for record in records]
    # the run did exercise the paths: failures of every backend, undecodable entries, callbacks
    assert any("llmstash" in record.name and record.levelno == logging.DEBUG for record in records)
    for expected in (
        "local cache read failed",
        "disk cache read failed",
        "redis cache read failed",
        "undecodable",
        "max_item_bytes",
        "callback Raising raised",
        "holds a NotALogger",
        "redis unreachable at close",
        "received for command GET",  # redis-py's own record of a failed cluster command
        "received for command SET",
    ):
        assert any(expected in message for message in messages), expected
    assert any(record.name.startswith("httpx") for record in records)  # third-party records were captured
    assert leaks(records, [*SECRETS, *PAYLOADS]) == []


# ----- API keys never in key material or stored entries ------------------------------------------

OTHER_SECRETS = {
    "env": "sk-ENVKEY-MARKER-1a",
    "azure": "AZURE-KEY-MARKER-2b",
    "header": "HEADER-TOKEN-MARKER-3c",
    "aws": "AWS-SECRET-MARKER-4d",
    "extra": "EXTRA-BODY-KEY-MARKER-5e",
}


@contextlib.contextmanager
def key_documents() -> Iterator[list[bytes]]:
    """Every canonical document hashed into a key while the block runs."""
    seen: list[bytes] = []
    real = keys_module.canonical_bytes

    def spy(document: Any) -> bytes:
        data = real(document)
        seen.append(data)
        return data

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keys_module, "canonical_bytes", spy)
        yield seen


OBJECT_STORE_OPTIONS = {"s3": "s3_options", "gcs": "gcs_options", "azure-blob": "azure_options"}


def raw_object_store(options: dict[str, Any]) -> Any:
    """A second backend on the same bucket, to read and write objects behind the cache's back."""
    return storage_class(options["type"]).from_options({k: v for k, v in options.items() if k != "type"}, time.time)


def raw_bytes_of(cache: Cache, where: dict[str, Any]) -> bytes:
    """Everything the backend holds, as raw bytes: keys and values, files, every Redis key, every object."""
    if cache.type in OBJECT_STORE_OPTIONS:
        raw = raw_object_store(where)
        keys = sorted(raw.keys())
        assert keys
        return b"\n".join(key.encode() + b"\x00" + (raw.get(key) or b"") for key in keys)
    if cache.type == "local":
        storage = cache.storage
        assert isinstance(storage, MemoryStorage)
        return b"\n".join(key.encode() + b"\x00" + value for key, (value, _) in storage._entries.items())
    if cache.type == "disk":
        cache.close()  # everything on disk, nothing only in a connection
        files = sorted(path for path in Path(where["disk_cache_dir"]).rglob("*") if path.is_file())
        assert any(path.name == "cache.db" for path in files)
        return b"\n".join(path.read_bytes() for path in files)
    client = redis.Redis.from_url(where["url"])
    try:
        names = client.keys("*")  # llmstash's entries, and anything else (locks) it left
        assert names and all(client.type(name) == b"string" for name in names)
        return b"\n".join(name + b"\x00" + (client.get(name) or b"") for name in names)
    finally:
        client.close()


@pytest.fixture(params=["local", "disk", "redis", *OBJECT_STORE_OPTIONS])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param in OBJECT_STORE_OPTIONS:
        return {"type": request.param, **request.getfixturevalue(OBJECT_STORE_OPTIONS[request.param])}
    if request.param == "local":
        return {"type": "local"}
    if request.param == "disk":
        return {"type": "disk", "disk_cache_dir": str(tmp_path / "disk")}
    return {"type": "redis", "url": request.getfixturevalue("redis_url")}


def test_api_keys_never_reach_keys_or_stored_entries(
    backend: dict[str, Any], upstream: MockUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", OTHER_SECRETS["env"])
    monkeypatch.setenv("AZURE_API_KEY", OTHER_SECRETS["azure"])
    cache = Cache(**backend)
    llmstash.cache = cache
    with (
        key_documents() as documents,
        MockUpstream(api_key=OTHER_SECRETS["env"]) as openai_env,  # these two take the key from the environment
        MockUpstream(api_key=OTHER_SECRETS["azure"]) as azure_env,
    ):
        for _ in range(2):  # misses, then hits
            completion(**chat(upstream, f"{PROMPT} 1", aws_secret_access_key=OTHER_SECRETS["aws"]))
            completion(**chat(upstream, f"{PROMPT} 2", extra_headers={"X-Api-Token": OTHER_SECRETS["header"]}))
            completion(**chat(upstream, f"{PROMPT} 3", extra_body={"top_k": 3, "api_key": OTHER_SECRETS["extra"]}))
            list(completion(**chat(upstream, f"{PROMPT} 4", stream=True)))
            asyncio.run(acompletion(**chat(upstream, f"{PROMPT} 5")))
            text_completion(model="openai/demo", prompt=f"{PROMPT} 6", api_base=upstream.base_url, api_key=API_KEY)
            embedding(**embed(upstream, [f"{EMBED} 1", f"{EMBED} 2"]))
            transcription(model="whisper-1", file=b"RIFF-audio", api_base=upstream.base_url, api_key=API_KEY)
            azure = dict(api_base=upstream.azure_base, api_key=API_KEY, azure_ad_token=AD_TOKEN)
            completion(model="azure/deployment", messages=[{"role": "user", "content": f"{PROMPT} 7"}], **azure)
            completion(model="openai/demo", messages=[{"role": "user", "content": f"{PROMPT} 8"}], api_base=openai_env.base_url)
            completion(model="azure/env", messages=[{"role": "user", "content": f"{PROMPT} 9"}], api_base=azure_env.azure_base)
            cache.add_cache({"answer": RESPONSE}, cache_key="direct", api_key=API_KEY)
        assert [call.headers["authorization"] for call in openai_env.calls] == [f"Bearer {OTHER_SECRETS['env']}"]
        assert [call.headers["api-key"] for call in azure_env.calls] == [OTHER_SECRETS["azure"]]

    stats = cache.stats()
    assert stats["errors"] == 0 and stats["hits"] >= 10
    secrets = [API_KEY, "APIKEY-MARKER", AD_TOKEN, *OTHER_SECRETS.values()]
    # the keys were sent: the upstream requires API_KEY, and saw the others where they belong
    assert all(call.headers.get("authorization") == f"Bearer {API_KEY}" for call in upstream.calls if "/openai/" not in call.path)
    assert any(call.headers.get("x-api-token") == OTHER_SECRETS["header"] for call in upstream.calls)
    assert any(call.body.get("api_key") == OTHER_SECRETS["extra"] for call in upstream.calls)

    assert documents and any(b"PROMPT-MARKER" in document for document in documents)  # the spy saw the requests
    for document in documents:
        assert not [secret for secret in secrets if secret.encode() in document], document[:200]
    stored = raw_bytes_of(cache, backend)
    assert b"RESPONSE-MARKER" in stored and b"PROMPT-MARKER" in stored  # the scan reads the entries
    assert [secret for secret in secrets if secret.encode() in stored] == []


# ----- tenants: namespaces and `user` isolate entries -----------------------------------------------


def test_user_and_namespace_isolate_entries_exact_streamed_and_batched(backend: dict[str, Any], upstream: MockUpstream) -> None:
    tenants = {"a": Cache(**backend, namespace="tenant-a"), "b": Cache(**backend, namespace="tenant-b")}
    pairs = [(tenant, user) for tenant in tenants for user in ("alice", "bob")]
    texts = [f"{EMBED} {i}" for i in range(3)]

    def ask_as(tenant: str, user: str, question: str, stream: bool = False) -> tuple[str, bool]:
        llmstash.cache = tenants[tenant]
        if stream:
            chunks = list(completion(**chat(upstream, question, user=user, stream=True)))
            return chunks[0].id, chunks[0]._hidden_params["cache_hit"]
        answer = completion(**chat(upstream, question, user=user))
        return answer.id, answer._hidden_params["cache_hit"]

    def batch_as(tenant: str, user: str) -> int:
        llmstash.cache = tenants[tenant]
        cached: int = embedding(**embed(upstream, texts, user=user))._hidden_params["cached_items"]
        return cached

    for stream in (False, True):  # the same question, by two users in two tenants
        question = f"isolated question, streamed={stream}"
        firsts = {pair: ask_as(*pair, question, stream) for pair in pairs}
        assert [hit for _, hit in firsts.values()] == [False] * 4
        assert len({answer_id for answer_id, _ in firsts.values()}) == 4  # four entries
        for pair, (answer_id, _) in firsts.items():  # each reads back its own, streamed or not
            assert ask_as(*pair, question, stream) == (answer_id, True)
            assert ask_as(*pair, question, not stream) == (answer_id, True)
    assert upstream.call_count("chat/completions") == 8

    # a call's own namespace nests inside the Cache's: another entry again
    llmstash.cache = tenants["a"]
    nested = completion(**chat(upstream, "isolated question, streamed=False", user="alice", cache={"namespace": "team-1"}))
    assert nested._hidden_params["cache_hit"] is False
    assert nested._hidden_params["cache_key"].startswith("tenant-a:team-1:")

    # embedding batches: every item is isolated the same way
    assert [batch_as(*pair) for pair in pairs] == [0, 0, 0, 0]
    assert [batch_as(*pair) for pair in pairs] == [3, 3, 3, 3]
    assert upstream.call_count("embeddings") == 4
    llmstash.cache = tenants["a"]
    per_call = embedding(**embed(upstream, texts, user="alice", cache={"namespace": "team-1"}))
    assert per_call._hidden_params["cached_items"] == 0
    for cache in tenants.values():
        cache.close()


# ----- no unsafe deserialization or code execution in src -------------------------------------------

UNSAFE_MODULES = frozenset({"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle"})
SAFE_YAML_LOADERS = frozenset({"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"})


def unsafe_calls(source: str, filename: str = "<source>") -> list[str]:
    """Uses of pickle-like modules, eval/exec, and yaml loads that are not safe, in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where} import {alias.name}" for alias in node.names if alias.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append(f"{where} from {node.module} import")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in UNSAFE_MODULES:
            found.append(f"{where} {node.value.id}.{node.attr}")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if isinstance(func, ast.Name) and name in ("eval", "exec"):
                found.append(f"{where} {name}()")
            if name in ("import_module", "__import__") and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and str(first.value).split(".")[0] in UNSAFE_MODULES:
                    found.append(f"{where} {name}({first.value!r})")
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "yaml":
                if name in ("unsafe_load", "unsafe_load_all", "full_load", "full_load_all"):
                    found.append(f"{where} yaml.{name}()")
                elif name in ("load", "load_all"):
                    loader = next(
                        (kw.value for kw in node.keywords if kw.arg == "Loader"), node.args[1] if len(node.args) > 1 else None
                    )
                    loader_name = (
                        loader.attr if isinstance(loader, ast.Attribute) else loader.id if isinstance(loader, ast.Name) else None
                    )
                    if loader_name not in SAFE_YAML_LOADERS:
                        found.append(f"{where} yaml.{name}() without a safe Loader")
    return found


def test_the_source_scanner_finds_each_unsafe_pattern() -> None:
    unsafe = {
        "import pickle": 1,
        "import marshal as m": 1,
        "from pickle import loads": 1,
        "from dill import loads as l": 1,
        "x = pickle.loads(data)": 1,
        "eval('1 + 1')": 1,
        "exec(code)": 1,
        "importlib.import_module('pickle')": 1,
        "__import__('shelve')": 1,
        "yaml.load(text)": 1,
        "yaml.load(text, Loader=yaml.Loader)": 1,
        "yaml.load(text, yaml.FullLoader)": 1,
        "yaml.unsafe_load(text)": 1,
        "yaml.full_load(text)": 1,
    }
    for snippet, count in unsafe.items():
        assert len(unsafe_calls(snippet)) == count, snippet
    safe = [
        "yaml.safe_load(text)",
        "yaml.load(text, Loader=yaml.SafeLoader)",
        "yaml.load(text, yaml.CSafeLoader)",
        "re.compile('x')",
        "model.eval()",
        "orjson.loads(raw)",
        "json.loads(raw)",
        "mode = diskcache.core.MODE_PICKLE",
        "importlib.import_module(module_name)",
    ]
    for snippet in safe:
        assert unsafe_calls(snippet) == [], snippet


def test_no_pickle_eval_exec_or_unsafe_yaml_anywhere_in_src() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert len(files) >= 30 and any(path.name == "envelope.py" for path in files)
    found = [hit for path in files for hit in unsafe_calls(path.read_text(), str(path.relative_to(SRC.parent)))]
    assert found == []


# ----- stored data is inert: planted pickles never run -------------------------------------------------


class Canary:
    """Unpickling this creates ``marker``: proof that a stored pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.fixture
def planted(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[dict[str, Any], Any]]:
    """Cache options, and a function that plants raw bytes (or, on disk, an object diskcache
    pickles) under every llmstash entry the backend holds."""
    if request.param == "disk":
        directory = str(tmp_path / "disk")

        def plant_disk(payload: Any) -> int:
            db = diskcache.Cache(directory)
            try:
                names = [name for name in db.iterkeys() if isinstance(name, str)]
                for name in names:
                    db.set(name, payload)
            finally:
                db.close()
            return len(names)

        yield {"type": "disk", "disk_cache_dir": directory}, plant_disk
        return
    if request.param in OBJECT_STORE_OPTIONS:
        store_options = {"type": request.param, **request.getfixturevalue(OBJECT_STORE_OPTIONS[request.param])}
        raw = raw_object_store(store_options)

        def plant_object(payload: Any) -> int:
            keys = list(raw.keys())
            for key in keys:
                raw.set(key, payload, None)
            return len(keys)

        yield store_options, plant_object
        raw.close()
        return
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        client: Any = redis.Redis.from_url(url)
        options: dict[str, Any] = {"type": "redis", "url": url}
    else:
        nodes = request.getfixturevalue("cluster_nodes")
        client = redis.cluster.RedisCluster(startup_nodes=[redis.cluster.ClusterNode(n["host"], n["port"]) for n in nodes])
        options = {"type": "redis", "redis_startup_nodes": nodes}

    def plant_redis(payload: Any) -> int:
        names = client.keys("llmstash:*", target_nodes="all") if "redis_startup_nodes" in options else client.keys("llmstash:*")
        for name in names:
            client.set(name, payload)
        return len(names)

    yield options, plant_redis
    client.close()


@pytest.mark.parametrize(
    ("planted", "form"),
    [
        *(
            (where, form)
            for where in ("disk", "redis", "redis-cluster", *OBJECT_STORE_OPTIONS)
            for form in ("pickle", "pickle-behind-header")
        ),
        ("disk", "pickled-object"),  # an object diskcache itself pickles (Redis holds bytes only)
    ],
    indirect=["planted"],
)
def test_a_planted_pickle_never_runs(planted: tuple[dict[str, Any], Any], form: str, tmp_path: Path) -> None:
    options, plant = planted
    marker = tmp_path / "UNPICKLED"
    payload = pickle.dumps(Canary(marker))
    pickle.loads(payload)  # the control: the payload is live, unpickling it does create the marker
    assert marker.exists()
    marker.unlink()

    cache = Cache(**options)
    llmstash.cache = cache
    chat_kwargs = dict(model="openai/demo", messages=[{"role": "user", "content": "planted"}], mock_response=RESPONSE)
    with MockUpstream() as plain:
        embed_kwargs = dict(model="openai/text-embedding-3-small", input=["one", "two", "three"], api_base=plain.base_url)
        first = completion(**chat_kwargs)
        embedding(**embed_kwargs)
        cache.add_cache({"answer": RESPONSE}, cache_key="direct")
        value = {"pickle": payload, "pickle-behind-header": b"LS\x01" + payload, "pickled-object": Canary(marker)}[form]
        assert plant(value) == 5

        again = completion(**chat_kwargs)
        again_async = asyncio.run(acompletion(**chat_kwargs))
        batch = embedding(**embed_kwargs)
        batch_async = asyncio.run(aembedding(**embed_kwargs))
        direct = cache.get_cache(cache_key="direct")
        direct_async = asyncio.run(cache.async_get_cache(cache_key="direct"))
        assert plain.call_count("embeddings") == 2  # the batch went upstream again, once

    assert not marker.exists()
    assert again._hidden_params["cache_hit"] is False and again.id != first.id
    assert again_async._hidden_params["cache_hit"] is True and again_async.id == again.id  # replaced by the fresh answer
    assert batch._hidden_params["cached_items"] == 0 and batch_async._hidden_params["cached_items"] == 3
    assert direct is None and direct_async is None
    stats = cache.stats()
    # raw pickles are undecodable entries (dropped); a pickled disk object is refused by the backend
    assert stats["corrupt" if form != "pickled-object" else "errors"] >= 3
    cache.close()
