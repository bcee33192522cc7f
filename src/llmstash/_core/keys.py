"""Cache keys: SHA-256 over a canonical form of the request.

What is keyed: the request family (chat, text, embedding), the model (``provider/name``, or the
caching group a Router puts it in), the endpoint the request goes to, the payload (``messages``,
``prompt`` or ``input``) and every other parameter the caller passed, provider-specific ones and
``extra_body`` included. What is not keyed: transport and control options (:data:`NOT_KEYED`)
and anything that looks like a secret (names ending in ``api_key``, ``key``, ``token``,
``key_id``, ``secret``, ``password``, ``credential(s)``, ``token_provider``), so secrets never
reach key material.

Canonical means: independent of keyword order and of dict key order at any depth; integral
floats in parameters equal their ints (``temperature=1`` and ``1.0`` share a key); dict keys that
are ints equal their string form (as they do in the JSON sent upstream); bytes are keyed by
their SHA-256.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from typing import Any

import orjson

from llmstash.exceptions import ConfigurationError

NOT_KEYED = frozenset(
    {
        # cache controls and llmstash options
        "cache",
        "caching",
        # transport: where and how the request travels, not what it asks
        "api_base",
        "base_url",
        "api_version",
        "timeout",
        "request_timeout",
        "max_retries",
        "num_retries",
        "extra_headers",
        "headers",
        "organization",
        "client",
        # delivery shape: a streamed and a non-streamed request share one entry
        "stream",
        "stream_options",
        # bookkeeping that never changes the answer
        "metadata",
        "litellm_call_id",
        "litellm_logging_obj",
        "logger_fn",
    }
)
"""Parameters that never change the answer and are left out of the key."""

_SECRET_NAME = re.compile(r"(?:^|_)(?:key|key_id|token|token_provider|secret|password|credentials?)$")
_keyed_names: dict[str, bool] = {}


def is_keyed(name: str) -> bool:
    """Whether a call parameter is part of the cache key."""
    keyed = _keyed_names.get(name)
    if keyed is None:
        keyed = name not in NOT_KEYED and not _SECRET_NAME.search(name.lower())
        if len(_keyed_names) < 4096:
            _keyed_names[name] = keyed
    return keyed


def _normalize(value: Any) -> Any:
    kind = type(value)
    if kind is float:
        return int(value) if value.is_integer() and abs(value) < 2**63 else value
    if kind is dict:
        return {str(k): _normalize(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [_normalize(item) for item in value]
    return value


def _encode_other(value: Any) -> Any:
    """orjson's fallback for values that are not plain JSON."""
    data = getattr(value, "_data", None)
    if isinstance(data, dict):  # llmstash response objects and their parts
        return data
    if hasattr(value, "model_dump"):  # pydantic models (openai SDK types)
        return value.model_dump()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"sha256": hashlib.sha256(value).hexdigest()}
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, BaseException):  # mock_response=<exception instance>
        return {"exception": f"{type(value).__module__}.{type(value).__qualname__}", "message": str(value)}
    raise TypeError(f"cannot derive a cache key from a value of type {type(value).__name__}")


_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def canonical_bytes(document: Any) -> bytes:
    """The canonical JSON bytes of a document (sorted keys at every depth)."""
    try:
        return orjson.dumps(document, default=_encode_other, option=_OPTIONS)
    except orjson.JSONEncodeError as exc:
        if "surrogates" not in str(exc):
            raise TypeError(str(exc)) from None
        # Strings that are not valid UTF-8 (lone surrogates): the stdlib escapes them.
        return json.dumps(document, default=_encode_other, sort_keys=True).encode()


def _keyed(params: dict[str, Any]) -> dict[str, Any]:
    """The keyed parameters, normalized."""
    options = {name: _normalize(value) for name, value in params.items() if is_keyed(name)}
    extra_body = options.get("extra_body")
    if isinstance(extra_body, dict):  # its top-level names are parameters too
        options["extra_body"] = {name: value for name, value in extra_body.items() if is_keyed(name)}
    return options


def request_key(family: str, model: str, endpoint: str | None, payload: Any, params: dict[str, Any]) -> str:
    """The hex SHA-256 key of a request (without namespace)."""
    options = _keyed(params)
    document = {"family": family, "model": model, "endpoint": endpoint, "payload": payload, "params": options}
    try:
        return hashlib.sha256(canonical_bytes(document)).hexdigest()
    except TypeError as exc:
        raise _unkeyable(payload, options) from exc


def _unkeyable(payload: Any, options: dict[str, Any]) -> ConfigurationError:
    """A clear error naming the argument whose value cannot be put in a key."""
    for name, value in [("the payload (messages, prompt or input)", payload), *((f"{k}=", v) for k, v in options.items())]:
        try:
            canonical_bytes(value)
        except TypeError as exc:
            return ConfigurationError(
                f"{name} holds a value llmstash cannot key ({exc}); pass JSON-compatible values "
                "(str, int, float, bool, None, lists and dicts of them)"
            )
    return ConfigurationError("the request holds a value llmstash cannot key")


def item_keys(family: str, model: str, endpoint: str | None, params: dict[str, Any], items: list[Any]) -> list[str]:
    """Hex SHA-256 keys of the items of a batch that share everything else: the shared part is
    hashed once, then each item is added to a copy of that hash."""
    shared = hashlib.sha256(canonical_bytes({"family": family, "model": model, "endpoint": endpoint, "params": _keyed(params)}))
    keys = []
    for item in items:
        digest = shared.copy()
        digest.update(b"\x00")
        digest.update(canonical_bytes(item))
        keys.append(digest.hexdigest())
    return keys


def _escape(namespace: str) -> str:
    return namespace.replace("%", "%25").replace(":", "%3A")


def with_namespace(key: str, *namespaces: str | None) -> str:
    """Prefix a key with its namespaces, outermost first: ``"prod:tenant-a:<key>"``. A ``:`` inside
    a namespace is escaped (``%3A``), so namespace ``"a:b"`` never shares keys with ``"a"`` nested
    with ``"b"``."""
    prefix = ":".join(_escape(ns) for ns in namespaces if ns)
    return f"{prefix}:{key}" if prefix else key


def digest(key: str) -> str:
    """A short hash of a key, safe to log even when a custom key holds prompt text."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]
