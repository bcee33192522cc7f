"""Model routing: which provider, endpoint and credentials a model name means. Pure; reads env.

- ``gpt-*`` and other bare names, and ``openai/<name>``: any OpenAI-compatible server. Endpoint:
  ``api_base=`` or ``base_url=``, else ``OPENAI_BASE_URL`` / ``OPENAI_API_BASE``, else
  ``https://api.openai.com/v1``. Key: ``api_key=`` or ``OPENAI_API_KEY``.
- ``azure/<deployment>``: Azure OpenAI. Endpoint: ``api_base=`` or ``AZURE_API_BASE`` /
  ``AZURE_OPENAI_ENDPOINT``; key: ``api_key=`` or ``AZURE_API_KEY`` / ``AZURE_OPENAI_API_KEY``;
  ``api_version=`` or ``AZURE_API_VERSION`` / ``OPENAI_API_VERSION``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from llmstash.exceptions import ConfigurationError

OPENAI_DEFAULT_BASE = "https://api.openai.com/v1"
AZURE_DEFAULT_API_VERSION = "2024-10-21"
PROVIDERS = ("openai", "azure")


_KEY_ENV = {"openai": ("OPENAI_API_KEY",), "azure": ("AZURE_API_KEY", "AZURE_OPENAI_API_KEY")}


@dataclass(slots=True)
class Route:
    provider: str
    model: str
    """The name sent upstream (the deployment name for Azure)."""
    endpoint: str
    api_key: str | None = field(default=None, repr=False)
    """The key passed to the call; :meth:`credential` falls back to the environment."""
    api_version: str | None = None

    @property
    def model_id(self) -> str:
        """Provider-qualified model name: ``gpt-4o`` and ``openai/gpt-4o`` are one model."""
        return f"{self.provider}/{self.model}"

    def credential(self) -> str | None:
        """The API key to send: the call's ``api_key``, else the provider's environment variable.
        Read only when a request is sent, so a cache hit never touches the environment."""
        return self.api_key or _env(*_KEY_ENV.get(self.provider, ()))


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def resolve(model: Any, params: dict[str, Any]) -> Route:
    """The route for ``model`` given the call's parameters (``api_base``, ``api_key``, ...).

    With ``mock_response=`` nothing is sent, so any provider prefix and a missing endpoint are fine.
    """
    if not isinstance(model, str) or not model:
        raise ConfigurationError(f"model must be a non-empty string such as 'gpt-4o-mini', got {model!r}")
    mocked = params.get("mock_response") is not None
    provider, slash, name = model.partition("/")
    if not slash:
        provider, name = "openai", model
    elif provider not in PROVIDERS and not mocked:
        raise ConfigurationError(
            f"model {model!r}: provider {provider!r} is not supported; use 'openai/<name>' for any "
            f"OpenAI-compatible server (with api_base=), 'azure/<deployment>', or mock_response="
        )
    base = params.get("api_base") or params.get("base_url")
    key = params.get("api_key")
    if provider == "azure":
        base = base or _env("AZURE_API_BASE", "AZURE_OPENAI_ENDPOINT")
        if not base and not mocked:
            raise ConfigurationError(f"model {model!r} needs api_base= or the AZURE_API_BASE environment variable")
        version = params.get("api_version") or _env("AZURE_API_VERSION", "OPENAI_API_VERSION") or AZURE_DEFAULT_API_VERSION
        return Route("azure", name, str(base or "").rstrip("/"), key, version)
    if provider != "openai":
        return Route(provider, name, str(base or "").rstrip("/"), key)
    base = base or _env("OPENAI_BASE_URL", "OPENAI_API_BASE") or OPENAI_DEFAULT_BASE
    return Route("openai", name, str(base).rstrip("/"), key)
