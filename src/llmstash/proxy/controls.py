"""Per-request cache controls: the body's ``cache`` object and the HTTP headers.

==========================  ======================================================
``Cache-Control``           ``no-cache`` (skip the read, store the fresh answer),
                            ``no-store`` (don't store), ``s-maxage=N`` (only
                            entries at most N seconds old); comma-separated
``x-llmstash-ttl``          seconds the answer stays cached (``0``: not kept)
``x-llmstash-namespace``    an extra key prefix for this request
==========================  ======================================================

Headers override the same control in the body. Anything else in ``Cache-Control``, or a value
that is not a number or a valid name, is a 400 naming the header and the allowed values. Under
``cache_scope: per_key`` the caller's namespace always comes first, so a namespace a client
chooses can never reach another key's entries.
"""

from __future__ import annotations

import math
import re
from typing import Any

from starlette.datastructures import Headers

from llmstash._core.policy import parse_controls
from llmstash.exceptions import ConfigurationError
from llmstash.proxy.errors import ProxyError

TTL_HEADER = "x-llmstash-ttl"
NAMESPACE_HEADER = "x-llmstash-namespace"
_NAMESPACE = re.compile(r"[A-Za-z0-9._:/-]{1,128}")
_CACHE_CONTROL_HELP = "allowed: no-cache, no-store, s-maxage=<seconds>, comma-separated"


def _seconds(header: str, text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    if not value >= 0 or math.isinf(value):
        raise ProxyError(400, f"header {header}: {text!r} is not a number of seconds >= 0", param=header, code="invalid_header")
    return value


def _cache_control(text: str) -> dict[str, Any]:
    controls: dict[str, Any] = {}
    for part in text.split(","):
        directive = part.strip().lower()
        if not directive:
            continue
        name, _, value = directive.partition("=")
        name = name.strip()
        if name in ("no-cache", "no-store") and not value:
            controls[name] = True
        elif name == "s-maxage" and value:
            controls["s-maxage"] = _seconds("Cache-Control s-maxage", value.strip().strip('"'))
        else:
            raise ProxyError(
                400,
                f"header Cache-Control: unsupported directive {part.strip()!r}; {_CACHE_CONTROL_HELP}",
                param="Cache-Control",
                code="invalid_header",
            )
    return controls


def _namespace(where: str, value: Any) -> str:
    if not isinstance(value, str) or not _NAMESPACE.fullmatch(value):
        raise ProxyError(
            400,
            f"{where}: {value!r} is not a valid namespace; allowed: 1-128 characters of A-Z a-z 0-9 . _ : / -",
            param=where,
            code="invalid_header" if where.startswith("header") else None,
        )
    return value


def request_controls(headers: Headers, body_cache: Any, scope: str | None) -> dict[str, Any] | None:
    """The ``cache=`` argument for the library call (None when there are no controls)."""
    if body_cache is not None and not isinstance(body_cache, dict):
        raise ProxyError(
            400, "cache must be an object of controls (no-cache, no-store, ttl, s-maxage, namespace, use-cache)", param="cache"
        )
    controls: dict[str, Any] = dict(body_cache or {})
    if controls.get("namespace") is not None:
        controls["namespace"] = _namespace("cache.namespace", controls["namespace"])
    for raw_name, raw_value in headers.raw:  # one pass over the headers (the hit path is short)
        if raw_name == b"cache-control":
            controls.update(_cache_control(raw_value.decode("latin-1")))
        elif raw_name == b"x-llmstash-ttl":
            controls["ttl"] = _seconds(f"header {TTL_HEADER}", raw_value.decode("latin-1"))
        elif raw_name == b"x-llmstash-namespace":
            controls["namespace"] = _namespace(f"header {NAMESPACE_HEADER}", raw_value.decode("latin-1").strip())
    if scope is not None:
        own = controls.get("namespace")
        controls["namespace"] = scope if own is None else f"{scope}/{own}"
    try:
        parse_controls(controls or None)  # the library's own checks: names, types, ranges
    except ConfigurationError as exc:
        raise ProxyError(400, str(exc), param="cache") from None
    return controls or None
