"""Who is calling: the master key, a virtual key, or (when no master key is configured) anyone.

Keys come in ``Authorization: Bearer <key>`` (what the OpenAI SDKs send), ``x-api-key`` or
``api-key``. Presented keys are compared by their SHA-256, so a lookup takes the same time
whatever the key. With ``cache_scope: per_key`` each key's entries live in a namespace named
after a hash of the key (``key-<16 hex>``), never the key itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from llmstash.proxy.errors import ProxyError

ADMIN_COOKIE = "llmstash_ui"


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def scope_namespace(key: str) -> str:
    """The namespace of a key's entries under ``cache_scope: per_key``: ``key-`` + 16 hex digits
    of a hash of the key (the key itself never reaches a cache key, a log or a header)."""
    return "key-" + hashlib.sha256(b"llmstash-scope\0" + key.encode("utf-8", "surrogatepass")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller."""

    name: str
    is_master: bool
    namespace: str | None
    """The caller's own namespace under ``cache_scope: per_key``, else None."""


ANONYMOUS = Caller("anonymous", False, None)


def presented_key(connection: HTTPConnection) -> str | None:
    headers = connection.headers
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else authorization.strip()
    return headers.get("x-api-key") or headers.get("api-key")


class Auth:
    """Checks keys. ``master_key=None`` leaves the API open (and the admin routes closed)."""

    def __init__(self, master_key: str | None, virtual_keys: dict[str, str], per_key: bool) -> None:
        self.master_key = master_key
        self.per_key = per_key
        self._callers: dict[str, Caller] = {}
        for key, name in virtual_keys.items():
            self._callers[_hash(key)] = Caller(name, False, scope_namespace(key) if per_key else None)
        if master_key is not None:
            self._callers[_hash(master_key)] = Caller("master", True, scope_namespace(master_key) if per_key else None)
        # the status page's cookie: derived from the master key, useless for the API
        self.ui_token = _hash("llmstash-ui\0" + master_key) if master_key is not None else None

    @property
    def enabled(self) -> bool:
        return self.master_key is not None

    def caller(self, connection: HTTPConnection) -> Caller:
        """The caller of an API route; 401 without a valid key (when keys are configured)."""
        if self.master_key is None:
            return ANONYMOUS
        key = presented_key(connection)
        if not key:
            raise ProxyError(
                401,
                "no API key: send Authorization: Bearer <key> (the master key or a virtual key)",
                "authentication_error",
                code="invalid_api_key",
            )
        caller = self._callers.get(_hash(key))
        if caller is None:
            raise ProxyError(401, "invalid API key", "authentication_error", code="invalid_api_key")
        return caller

    def require_master(self, connection: HTTPConnection) -> None:
        """Admin routes: only the master key (403 when the proxy has none configured)."""
        if self.master_key is None:
            raise ProxyError(403, "admin routes need general_settings.master_key in the config", "permission_error")
        if not self.caller(connection).is_master:
            raise ProxyError(403, "this route needs the master key", "permission_error", code="not_master_key")

    def ui_allowed(self, connection: HTTPConnection) -> bool:
        """The status page: the master key in a header, or the page's cookie."""
        if self.master_key is None:
            return False
        cookie = connection.cookies.get(ADMIN_COOKIE)
        if cookie is not None and self.ui_token is not None and _hash(cookie) == _hash(self.ui_token):
            return True
        key = presented_key(connection)
        return key is not None and _hash(key) == _hash(self.master_key)

    def is_master_key(self, key: str) -> bool:
        return self.master_key is not None and _hash(key) == _hash(self.master_key)
