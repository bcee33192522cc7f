"""Streams, without I/O: assemble streamed chunks into one response, and replay a response as chunks.

A cached stream is stored as the response a non-streamed request would have received
(``chat.completion`` or ``text_completion``), so streamed and non-streamed requests share entries
in both directions. Replay yields: a role chunk, the content in word-sized pieces, each tool
call as one delta, a finish chunk per choice, and (when asked) a usage chunk. Concatenating the
replayed deltas gives back exactly the stored content, tool-call arguments and finish reasons.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

_PIECE = re.compile(r"\S*\s*|\s+")
HEAD_FIELDS: tuple[str, ...] = ("id", "created", "model", "system_fingerprint")
"""Response fields every chunk of a stream repeats."""


def pieces(text: str) -> list[str]:
    """``text`` cut into word-sized pieces whose concatenation is ``text``."""
    return [piece for piece in _PIECE.findall(text) if piece] or [text]


def _merge_tool_call(calls: dict[int, dict[str, Any]], delta: dict[str, Any]) -> None:
    index = delta.get("index", len(calls))
    call = calls.setdefault(index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
    if delta.get("id"):
        call["id"] = delta["id"]
    if delta.get("type"):
        call["type"] = delta["type"]
    function = delta.get("function") or {}
    if function.get("name"):
        call["function"]["name"] += function["name"]
    if function.get("arguments"):
        call["function"]["arguments"] += function["arguments"]


def assemble(family: str, chunks: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The non-streamed response equivalent to a complete stream of chunk dicts."""
    head: dict[str, Any] = {}
    choices: dict[int, dict[str, Any]] = {}
    tool_calls: dict[int, dict[int, dict[str, Any]]] = {}
    usage = None
    for chunk in chunks:
        if not head:
            head = {k: chunk[k] for k in HEAD_FIELDS if k in chunk}
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            index = choice.get("index", 0)
            slot = choices.setdefault(index, {"index": index, "role": None, "content": None, "finish_reason": None})
            if choice.get("finish_reason"):
                slot["finish_reason"] = choice["finish_reason"]
            if family == "text":
                slot["content"] = (slot["content"] or "") + (choice.get("text") or "")
                continue
            delta = choice.get("delta") or {}
            if delta.get("role"):
                slot["role"] = delta["role"]
            if delta.get("content") is not None:
                slot["content"] = (slot["content"] or "") + delta["content"]
            for call in delta.get("tool_calls") or ():
                _merge_tool_call(tool_calls.setdefault(index, {}), call)
    response: dict[str, Any] = {**head, "object": "text_completion" if family == "text" else "chat.completion"}
    response["choices"] = [_final_choice(family, choices[i], tool_calls.get(i)) for i in sorted(choices)]
    if usage is not None:
        response["usage"] = usage
    return response


def _final_choice(family: str, slot: dict[str, Any], calls: dict[int, dict[str, Any]] | None) -> dict[str, Any]:
    if family == "text":
        return {"index": slot["index"], "text": slot["content"] or "", "logprobs": None, "finish_reason": slot["finish_reason"]}
    message: dict[str, Any] = {"role": slot["role"] or "assistant", "content": slot["content"]}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return {"index": slot["index"], "message": message, "logprobs": None, "finish_reason": slot["finish_reason"]}


def replay(family: str, response: dict[str, Any], include_usage: bool) -> Iterator[dict[str, Any]]:
    """Chunk dicts that stream ``response`` (a stored non-streamed response)."""
    head: dict[str, Any] = {k: response[k] for k in HEAD_FIELDS if k in response}
    head["object"] = "text_completion" if family == "text" else "chat.completion.chunk"

    def chunk(choice: dict[str, Any]) -> dict[str, Any]:
        return {**head, "choices": [choice]}

    for choice in response.get("choices") or ():
        index = choice.get("index", 0)
        if family == "text":
            for piece in pieces(choice.get("text") or ""):
                yield chunk({"index": index, "text": piece, "logprobs": None, "finish_reason": None})
            yield chunk({"index": index, "text": "", "logprobs": None, "finish_reason": choice.get("finish_reason")})
            continue
        message = choice.get("message") or {}
        first = {"role": message.get("role", "assistant"), "content": None if message.get("content") is None else ""}
        yield chunk({"index": index, "delta": first, "finish_reason": None})
        if message.get("content"):
            for piece in pieces(message["content"]):
                yield chunk({"index": index, "delta": {"content": piece}, "finish_reason": None})
        for position, call in enumerate(message.get("tool_calls") or ()):
            yield chunk({"index": index, "delta": {"tool_calls": [{"index": position, **call}]}, "finish_reason": None})
        yield chunk({"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")})
    if include_usage and response.get("usage") is not None:
        yield {**head, "choices": [], "usage": response["usage"]}
