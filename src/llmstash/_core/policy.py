"""Cache policy: per-call controls, the opt-in/opt-out mode and the call types.

The rules (also in README, "Cache controls"):

- ``caching=False`` or ``cache={"use-cache": False}``: the cache is neither read nor written.
- ``caching=True`` or ``cache={"use-cache": True}``: the cache is used, whatever the mode.
- otherwise the cache is used when ``mode`` is ``default_on`` (the default).
- ``no-cache``: skip the read, call upstream, store the fresh answer (unless ``no-store``).
- ``no-store``: read as usual, but never write this answer.
- ``ttl``: seconds this answer stays valid; ``0`` means it is not kept at all.
- ``s-maxage``: accept a cached answer only if it is at most this many seconds old;
  ``0`` accepts only an entry made in the same instant (in practice: a fresh call).
- ``namespace``: an extra key prefix for this call, nested inside the Cache's namespace.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

from llmstash.exceptions import ConfigurationError


class CacheMode(enum.StrEnum):
    """Whether calls use the cache unless told not to (``default_on``) or only when asked."""

    default_on = "default_on"
    default_off = "default_off"


CALL_TYPES = (
    "completion",
    "acompletion",
    "text_completion",
    "atext_completion",
    "embedding",
    "aembedding",
    "transcription",
    "atranscription",
)

CONTROL_NAMES = ("no-cache", "no-store", "ttl", "s-maxage", "namespace", "use-cache")


@dataclass(frozen=True, slots=True)
class Controls:
    """Parsed per-call cache controls (``cache={...}``)."""

    no_cache: bool = False
    no_store: bool = False
    ttl: float | None = None
    max_age: float | None = None
    namespace: str | None = None
    use_cache: bool | None = None


NO_CONTROLS = Controls()


def check_seconds(name: str, value: Any) -> float | None:
    """``value`` as a non-negative number of seconds (None passes through)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
        raise ConfigurationError(f"{name} must be a number of seconds >= 0 or None, got {value!r}")
    if value < 0:
        raise ConfigurationError(f"{name} must be >= 0 seconds, got {value!r}")
    try:
        return float(value)
    except OverflowError:  # an int beyond the float range: as long as inf
        return math.inf


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f'cache control "{name}" must be True or False, got {value!r}')
    return value


def parse_controls(value: Any) -> Controls:
    """Validate a ``cache={...}`` argument; unknown names and wrong types raise ConfigurationError."""
    if value is None:
        return NO_CONTROLS
    if not isinstance(value, dict):
        raise ConfigurationError(f"cache= must be a dict of controls {list(CONTROL_NAMES)}, got {type(value).__name__}")
    unknown = [name for name in value if name not in CONTROL_NAMES]
    if unknown:
        raise ConfigurationError(f"unknown cache control {unknown[0]!r}; valid controls are {list(CONTROL_NAMES)}")
    namespace = value.get("namespace")
    if namespace is not None and (not isinstance(namespace, str) or not namespace):
        raise ConfigurationError(f'cache control "namespace" must be a non-empty string, got {namespace!r}')
    use_cache = value.get("use-cache")
    return Controls(
        no_cache=_check_bool("no-cache", value.get("no-cache", False)),
        no_store=_check_bool("no-store", value.get("no-store", False)),
        ttl=check_seconds('cache control "ttl"', value.get("ttl")),
        max_age=check_seconds('cache control "s-maxage"', value.get("s-maxage")),
        namespace=namespace,
        use_cache=None if use_cache is None else _check_bool("use-cache", use_cache),
    )


def parse_mode(value: Any) -> CacheMode:
    try:
        return CacheMode(value)
    except ValueError:
        raise ConfigurationError(f"mode must be one of {[m.value for m in CacheMode]}, got {value!r}") from None


def parse_call_types(value: Any) -> frozenset[str]:
    if value is None:
        return frozenset(CALL_TYPES)
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(f"supported_call_types must be a list drawn from {list(CALL_TYPES)}, got {value!r}")
    unknown = [v for v in value if v not in CALL_TYPES]
    if unknown:
        raise ConfigurationError(f"unknown call type {unknown[0]!r} in supported_call_types; valid: {list(CALL_TYPES)}")
    return frozenset(value)


def uses_cache(mode: CacheMode, caching: bool | None, controls: Controls) -> bool:
    """Whether a call consults the cache at all (see the module docstring)."""
    if caching is False or controls.use_cache is False:
        return False
    if caching is True or controls.use_cache is True:
        return True
    return mode is CacheMode.default_on
