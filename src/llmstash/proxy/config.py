"""The proxy's configuration file, in LiteLLM proxy's shape (``yaml.safe_load`` only).

    model_list:
      - model_name: gpt-4o-mini
        litellm_params: {model: openai/gpt-4o-mini, api_key: os.environ/OPENAI_API_KEY}
        model_info: {input_cost_per_token: 0.00000015, output_cost_per_token: 0.0000006}
    litellm_settings:                 # or llmstash_settings
      cache: true
      cache_params: {type: redis, url: os.environ/REDIS_URL, ttl: 3600}
      cache_scope: shared             # or per_key: each API key gets its own entries
    router_settings: {caching_groups: [[gpt-4o-mini, gpt-4o-mini-eu]], timeout: 60}
    general_settings:
      master_key: os.environ/LLMSTASH_MASTER_KEY
      virtual_keys: [{key: os.environ/TEAM_A_KEY, name: team-a}]

A value written ``"os.environ/NAME"`` is read from the environment: in ``litellm_params`` at call
time (by the Router), elsewhere when the file is loaded. Unknown LiteLLM settings are ignored
with a warning; wrong values of the settings llmstash uses raise ConfigurationError naming them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmstash.exceptions import ConfigurationError
from llmstash.router import ENV_PREFIX

logger = logging.getLogger("llmstash.proxy")

SECTIONS = ("model_list", "litellm_settings", "llmstash_settings", "router_settings", "general_settings", "environment_variables")
SCOPES = ("shared", "per_key")
ROUTER_SETTINGS = ("caching_groups", "timeout")
GENERAL_SETTINGS = ("master_key", "virtual_keys", "metrics_auth")
CACHE_SETTINGS = ("cache", "cache_params", "cache_scope")


@dataclass(frozen=True)
class Price:
    """Dollars per token, for the dollars-saved figures."""

    input: float = 0.0
    output: float = 0.0


@dataclass
class ProxyConfig:
    """A checked configuration; build one with :func:`load_config` or :func:`parse_config`."""

    model_list: list[dict[str, Any]]
    cache_params: dict[str, Any] | None = None
    """``Cache(**cache_params)`` arguments, or None: no cache."""
    cache_scope: str = "shared"
    caching_groups: list[tuple[str, ...]] = field(default_factory=list)
    timeout: float | None = None
    master_key: str | None = None
    virtual_keys: dict[str, str] = field(default_factory=dict)
    """key → name."""
    metrics_auth: bool = False
    prices: dict[str, Price] = field(default_factory=dict)
    """model_name → price per token."""

    @property
    def model_names(self) -> list[str]:
        names: list[str] = []
        for entry in self.model_list:
            if entry["model_name"] not in names:
                names.append(entry["model_name"])
        return names


def _env(where: str, value: Any) -> Any:
    """``value``, or the environment variable it names (``"os.environ/NAME"``)."""
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        name = value[len(ENV_PREFIX) :]
        if name not in os.environ:
            raise ConfigurationError(f"{where} refers to the environment variable {name}, which is not set")
        return os.environ[name]
    return value


def _mapping(where: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigurationError(f"{where} must be a mapping, got {type(value).__name__}")
    return value


def _ignore_unknown(where: str, section: dict[str, Any], known: tuple[str, ...]) -> None:
    unknown = sorted(str(name) for name in section if name not in known)
    if unknown:
        logger.warning("llmstash proxy: ignoring %s settings llmstash does not use: %s", where, ", ".join(unknown))


def _price(entry: dict[str, Any]) -> Price | None:
    """LiteLLM's per-token costs, from ``model_info`` or ``litellm_params``."""
    found: dict[str, float] = {}
    for section in ("model_info", "litellm_params"):
        info = entry.get(section) or {}
        for name in ("input_cost_per_token", "output_cost_per_token"):
            value = info.get(name) if isinstance(info, dict) else None
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigurationError(
                    f"{entry.get('model_name')!r}: {section}.{name} must be a number of dollars >= 0, got {value!r}"
                )
            found.setdefault(name, float(value))
    if not found:
        return None
    return Price(found.get("input_cost_per_token", 0.0), found.get("output_cost_per_token", 0.0))


def _virtual_keys(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, list):
        raise ConfigurationError("general_settings.virtual_keys must be a list of keys or of {key: ..., name: ...}")
    keys: dict[str, str] = {}
    for position, item in enumerate(value):
        key, name = (item, f"key-{position}") if isinstance(item, str) else (None, None)
        if isinstance(item, dict):
            key, name = item.get("key"), str(item.get("name") or item.get("key_alias") or f"key-{position}")
        key = _env(f"general_settings.virtual_keys[{position}]", key)
        if not isinstance(key, str) or len(key) < 8:
            raise ConfigurationError(f"general_settings.virtual_keys[{position}] must be a key string of at least 8 characters")
        keys[key] = str(name)
    return keys


def parse_config(document: Any) -> ProxyConfig:
    """Check a loaded configuration document and build a :class:`ProxyConfig`."""
    if not isinstance(document, dict):
        raise ConfigurationError("the config file must hold a mapping with model_list, litellm_settings, ...")
    _ignore_unknown("top-level", document, SECTIONS)
    for name, value in _mapping("environment_variables", document.get("environment_variables")).items():
        os.environ.setdefault(str(name), str(value))  # LiteLLM's section: variables the file's references may use
    model_list = document.get("model_list")
    if not isinstance(model_list, list) or not model_list:
        raise ConfigurationError("model_list must be a non-empty list of {model_name: ..., litellm_params: {model: ...}}")
    if "litellm_settings" in document and "llmstash_settings" in document:
        raise ConfigurationError("give either litellm_settings or llmstash_settings (its alias), not both")
    settings_name = "llmstash_settings" if "llmstash_settings" in document else "litellm_settings"
    settings = _mapping(settings_name, document.get(settings_name))
    _ignore_unknown(settings_name, settings, CACHE_SETTINGS)
    enabled = settings.get("cache", False)
    if not isinstance(enabled, bool):
        raise ConfigurationError(f"{settings_name}.cache must be true or false, got {enabled!r}")
    cache_params = {
        str(k): _env(f"{settings_name}.cache_params.{k}", v)
        for k, v in _mapping(f"{settings_name}.cache_params", settings.get("cache_params")).items()
    }
    scope = settings.get("cache_scope", "shared")
    if scope not in SCOPES:
        raise ConfigurationError(f"{settings_name}.cache_scope must be one of {list(SCOPES)}, got {scope!r}")

    router = _mapping("router_settings", document.get("router_settings"))
    _ignore_unknown("router_settings", router, ROUTER_SETTINGS)
    groups = router.get("caching_groups") or []
    if not isinstance(groups, list) or not all(isinstance(g, (list, tuple)) for g in groups):
        raise ConfigurationError("router_settings.caching_groups must be a list of lists of model names")
    timeout = router.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ConfigurationError(f"router_settings.timeout must be a positive number of seconds, got {timeout!r}")

    general = _mapping("general_settings", document.get("general_settings"))
    _ignore_unknown("general_settings", general, GENERAL_SETTINGS)
    master_key = _env("general_settings.master_key", general.get("master_key"))
    if master_key is not None and (not isinstance(master_key, str) or len(master_key) < 8):
        raise ConfigurationError("general_settings.master_key must be a string of at least 8 characters")
    virtual_keys = _virtual_keys(general.get("virtual_keys"))
    if virtual_keys and master_key is None:
        raise ConfigurationError("general_settings.virtual_keys needs general_settings.master_key too")
    if scope == "per_key" and master_key is None:
        raise ConfigurationError(f"{settings_name}.cache_scope: per_key needs general_settings.master_key (keys to scope by)")
    metrics_auth = general.get("metrics_auth", False)
    if not isinstance(metrics_auth, bool):
        raise ConfigurationError(f"general_settings.metrics_auth must be true or false, got {metrics_auth!r}")

    prices = {}
    for entry in model_list:
        price = _price(entry) if isinstance(entry, dict) else None
        if price is not None:
            prices[str(entry.get("model_name"))] = price
    return ProxyConfig(
        model_list=model_list,
        cache_params=cache_params if enabled else None,
        cache_scope=str(scope),
        caching_groups=[tuple(str(name) for name in group) for group in groups],
        timeout=None if timeout is None else float(timeout),
        master_key=master_key,
        virtual_keys=virtual_keys,
        metrics_auth=metrics_auth,
        prices=prices,
    )


def load_config(path: str | os.PathLike[str]) -> ProxyConfig:
    """Read and check a YAML config file (``yaml.safe_load``: no tags, nothing executed)."""
    try:
        import yaml
    except ImportError:
        raise ImportError('the proxy needs its extra: pip install "llmstash[proxy]"') from None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read the config file {os.fspath(path)!r}: {exc.strerror}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"the config file {os.fspath(path)!r} is not valid YAML: {exc}") from None
    return parse_config(document)
