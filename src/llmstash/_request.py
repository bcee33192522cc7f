"""A call, described once: family, model route, payload, parameters and cache controls."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmstash._core.audio import audio_digest, read_upload
from llmstash._core.keys import item_keys, request_key
from llmstash._core.policy import Controls, parse_controls
from llmstash.exceptions import ConfigurationError
from llmstash.providers.routing import Route, resolve

FAMILY_OF_CALL = {
    "completion": "chat",
    "acompletion": "chat",
    "text_completion": "text",
    "atext_completion": "text",
    "embedding": "embedding",
    "aembedding": "embedding",
    "transcription": "transcription",
    "atranscription": "transcription",
}
PAYLOAD_OF_FAMILY = {"chat": "messages", "text": "prompt", "embedding": "input", "transcription": "file"}


@dataclass(slots=True)
class Request:
    call_type: str
    family: str
    model: str
    payload: Any
    params: dict[str, Any]
    """Every other argument the caller gave, except ``cache`` and ``caching``."""
    route: Route
    controls: Controls
    caching: bool | None
    kwargs: dict[str, Any]
    """The arguments exactly as given (custom key functions and callbacks receive these)."""
    caching_group: str | None = None
    upload: tuple[str, bytes] | None = None
    """Transcriptions: the audio file's name and bytes (the payload holds their digest)."""

    @property
    def stream(self) -> bool:
        return bool(self.params.get("stream"))

    def key(self) -> str:
        """The request's hex SHA-256 key, without namespace."""
        return self._key(self.family, self.payload)

    def item_keys(self, items: list[Any]) -> list[str]:
        """The keys of the input items of an embedding batch, without namespace."""
        return item_keys("embedding-item", *self._model_and_endpoint(), self.params, items)

    def _model_and_endpoint(self) -> tuple[str, str | None]:
        if self.caching_group is not None:  # models of a group share entries, across endpoints
            return f"group/{self.caching_group}", None
        return self.route.model_id, self.route.endpoint

    def _key(self, family: str, payload: Any) -> str:
        return request_key(family, *self._model_and_endpoint(), payload, self.params)


def _family_from_kwargs(kwargs: dict[str, Any]) -> str:
    for family, payload_name in PAYLOAD_OF_FAMILY.items():
        if payload_name in kwargs:
            return family
    raise ConfigurationError("cannot tell the request type: pass messages=, prompt= or input=")


def build_request(call_type: str | None, kwargs: dict[str, Any]) -> Request:
    """Describe a call from its keyword arguments (``model``, the payload and the rest)."""
    family = FAMILY_OF_CALL[call_type] if call_type else _family_from_kwargs(kwargs)
    payload_name = PAYLOAD_OF_FAMILY[family]
    params = dict(kwargs)
    model = params.pop("model", None)
    if payload_name not in params:
        raise ConfigurationError(f"{call_type or family} needs {payload_name}=")
    payload = params.pop(payload_name)
    caching = params.pop("caching", None)
    if caching is not None and not isinstance(caching, bool):
        raise ConfigurationError(f"caching must be True, False or None, got {caching!r}")
    controls = parse_controls(params.pop("cache", None))
    route = resolve(model, params)
    upload = None
    if family == "transcription":
        upload = read_upload(payload)
        payload = audio_digest(upload[1])
    return Request(call_type or family, family, model, payload, params, route, controls, caching, kwargs, upload=upload)
