"""OpenAI-shaped response objects.

A response wraps the JSON dict the upstream returned. Fields read as attributes
(``r.choices[0].message.content``) or as items (``r["choices"][0]["message"]["content"]``);
``model_dump()`` returns a deep copy of the dict. ``_hidden_params`` carries llmstash's own
facts about the call (``cache_hit``, ``cache_key``) and is never part of the dump.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import orjson

OPTIONAL_FIELDS = frozenset(
    {
        "annotations",
        "audio",
        "content",
        "finish_reason",
        "function_call",
        "logprobs",
        "name",
        "reasoning_content",
        "refusal",
        "role",
        "service_tier",
        "system_fingerprint",
        "tool_call_id",
        "tool_calls",
        "usage",
    }
)
"""OpenAI fields that may be left out of a JSON answer and read as None, as in the OpenAI SDK
(``message.tool_calls``, ``delta.content``); any other missing field raises AttributeError."""


def _wrap(value: Any) -> Any:
    if type(value) is dict:
        return OpenAIObject(value)
    if type(value) is list and value and type(value[0]) is dict:
        return [_wrap(item) for item in value]
    return value


def _unwrap(value: Any) -> Any:
    if isinstance(value, OpenAIObject):
        return value._data
    if isinstance(value, list):
        return [_unwrap(item) for item in value]
    return value


class OpenAIObject:
    """A JSON object with attribute access; nested objects share the parent's dict."""

    __slots__ = ("_data", "_hidden_params")

    def __init__(self, data: dict[str, Any] | None = None, **fields: Any) -> None:
        if data is None:
            data = {}
        if fields:
            data = {**data, **{k: _unwrap(v) for k, v in fields.items()}}
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_hidden_params", {})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return _wrap(self._data[name])
        except KeyError:
            if name in OPTIONAL_FIELDS:
                return None
            raise AttributeError(f"{type(self).__name__} has no field {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name in OpenAIObject.__slots__:
            object.__setattr__(self, name, value)
        else:
            self._data[name] = _unwrap(value)

    def __getitem__(self, name: str) -> Any:
        return _wrap(self._data[name])

    def __setitem__(self, name: str, value: Any) -> None:
        self._data[name] = _unwrap(value)

    def __contains__(self, name: object) -> bool:
        return name in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, OpenAIObject):
            return bool(self._data == other._data)
        if isinstance(other, dict):
            return bool(self._data == other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data!r})"

    def get(self, name: str, default: Any = None) -> Any:
        return _wrap(self._data[name]) if name in self._data else default

    def keys(self) -> Any:
        return self._data.keys()

    def model_dump(self) -> dict[str, Any]:
        """A deep copy of the response as plain JSON-compatible Python values."""
        return copy.deepcopy(self._data)

    def model_dump_json(self) -> str:
        return orjson.dumps(self._data).decode()

    def __copy__(self) -> OpenAIObject:
        clone = type(self)(dict(self._data))
        object.__setattr__(clone, "_hidden_params", dict(self._hidden_params))
        return clone

    def __deepcopy__(self, memo: dict[int, Any]) -> OpenAIObject:
        clone = type(self)(copy.deepcopy(self._data, memo))
        object.__setattr__(clone, "_hidden_params", copy.deepcopy(self._hidden_params, memo))
        return clone

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self._data,))


class ModelResponse(OpenAIObject):
    """A chat completion (``object == "chat.completion"``)."""

    __slots__ = ()


class TextCompletionResponse(OpenAIObject):
    """A legacy text completion (``object == "text_completion"``)."""

    __slots__ = ()


class EmbeddingResponse(OpenAIObject):
    """An embedding list (``object == "list"``, ``data[i].embedding``)."""

    __slots__ = ()


class ModelResponseStream(OpenAIObject):
    """One chunk of a streamed chat completion (``object == "chat.completion.chunk"``)."""

    __slots__ = ()


class TranscriptionResponse(OpenAIObject):
    """A transcription (``text``, and more fields with ``response_format="verbose_json"``)."""

    __slots__ = ()


RESPONSE_KINDS: dict[str, type[OpenAIObject]] = {
    "chat": ModelResponse,
    "text": TextCompletionResponse,
    "embedding": EmbeddingResponse,
    "transcription": TranscriptionResponse,
}
"""Response class per request family; the family name is stored in each cache entry."""


def kind_of(value: Any) -> str | None:
    """The family name of a response object, or ``None`` for any other value."""
    for kind, cls in RESPONSE_KINDS.items():
        if type(value) is cls:
            return kind
    return None


__all__ = [
    "EmbeddingResponse",
    "ModelResponse",
    "ModelResponseStream",
    "OpenAIObject",
    "TextCompletionResponse",
    "TranscriptionResponse",
]
