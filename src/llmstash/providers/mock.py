"""``mock_response=``: an answer made in-process, never sent anywhere.

A string becomes the assistant's message (or the completion text); a dict is taken as the whole
response body; an exception instance is raised as if the upstream had failed.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from llmstash.exceptions import ConfigurationError


def _tokens(text: str) -> int:
    return max(1, len(text.split()))


def _prompt_text(payload: Any) -> str:
    if isinstance(payload, list):
        return " ".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in payload)
    return str(payload)


def respond(family: str, model: str, payload: Any, mock: Any) -> dict[str, Any]:
    """The response body for a mocked call."""
    if isinstance(mock, BaseException):
        raise mock
    if isinstance(mock, dict):
        return dict(mock)
    if not isinstance(mock, str):
        raise ConfigurationError(f"mock_response must be a string, a dict or an exception, got {type(mock).__name__}")
    prompt_tokens = _tokens(_prompt_text(payload))
    completion_tokens = _tokens(mock)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    created = int(time.time())
    if family == "chat":
        return {
            "id": f"chatcmpl-mock-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": mock}, "finish_reason": "stop"}],
            "usage": usage,
        }
    if family == "text":
        return {
            "id": f"cmpl-mock-{uuid.uuid4().hex[:24]}",
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "text": mock, "finish_reason": "stop", "logprobs": None}],
            "usage": usage,
        }
    if family == "transcription":
        return {"text": mock}
    raise ConfigurationError("mock_response is supported for completion, text_completion and transcription calls")
