"""Streams handed to the caller: live ones that record what they pass on, and cached replays.

A live stream (a miss) yields the upstream's chunks as they arrive and keeps a copy. Only when
the upstream finishes normally — every choice has a ``finish_reason`` — is the assembled answer
stored; an error or an abandoned iterator stores nothing. A replay (a hit) yields chunks made from
the stored answer. Both kinds, and every chunk, carry ``_hidden_params["cache_hit"]``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from llmstash._core import streams
from llmstash.types import ModelResponseStream, OpenAIObject, TextCompletionResponse

Finish = Callable[[dict[str, Any] | None, BaseException | None], None]
AsyncFinish = Callable[[dict[str, Any] | None, BaseException | None], Awaitable[None]]


def _chunk_class(family: str) -> type[OpenAIObject]:
    return TextCompletionResponse if family == "text" else ModelResponseStream


class ResponseStream:
    """What ``completion(..., stream=True)`` returns: iterate it for chunks."""

    def __init__(self, chunks: Iterator[dict[str, Any]], family: str, hidden_params: dict[str, Any]) -> None:
        self._chunks = chunks
        self._chunk_class = _chunk_class(family)
        self._hidden_params = hidden_params

    def __iter__(self) -> ResponseStream:
        return self

    def __next__(self) -> OpenAIObject:
        chunk = self._chunk_class(next(self._chunks))
        chunk._hidden_params = dict(self._hidden_params)
        return chunk

    def close(self) -> None:
        """Stop reading; a live stream that did not finish stores nothing."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> ResponseStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncResponseStream:
    """What ``acompletion(..., stream=True)`` returns: ``async for`` it for chunks."""

    def __init__(self, chunks: AsyncIterator[dict[str, Any]], family: str, hidden_params: dict[str, Any]) -> None:
        self._chunks = chunks
        self._chunk_class = _chunk_class(family)
        self._hidden_params = hidden_params

    def __aiter__(self) -> AsyncResponseStream:
        return self

    async def __anext__(self) -> OpenAIObject:
        chunk = self._chunk_class(await self._chunks.__anext__())
        chunk._hidden_params = dict(self._hidden_params)
        return chunk

    async def aclose(self) -> None:
        close = getattr(self._chunks, "aclose", None)
        if close is not None:
            await close()

    async def __aenter__(self) -> AsyncResponseStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _complete(family: str, collected: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The assembled answer if the stream finished normally, else None."""
    answer = streams.assemble(family, collected)
    choices = answer["choices"]
    return answer if choices and all(choice.get("finish_reason") for choice in choices) else None


def _hidden(chunk: dict[str, Any], show_usage: bool) -> bool:
    """A usage-only chunk the caller did not ask for (llmstash asks, to store usage)."""
    return not show_usage and not chunk.get("choices") and chunk.get("usage") is not None


def capture(chunks: Iterator[dict[str, Any]], family: str, show_usage: bool, finish: Finish) -> Iterator[dict[str, Any]]:
    """Pass ``chunks`` on, then call ``finish(answer or None, error or None)`` exactly once."""
    captured = _capture(chunks, family, show_usage, finish)
    next(captured)  # into the try block: closing or dropping it before its first chunk still finishes
    return captured


def _capture(chunks: Iterator[dict[str, Any]], family: str, show_usage: bool, finish: Finish) -> Iterator[dict[str, Any]]:
    collected: list[dict[str, Any]] = []
    answer = error = None
    try:
        yield {}  # the priming stop, consumed by capture()
        for chunk in chunks:
            collected.append(chunk)
            if not _hidden(chunk, show_usage):
                yield chunk
        answer = _complete(family, collected)
    except GeneratorExit:
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
        finish(answer, error)


async def acapture(
    chunks: AsyncIterator[dict[str, Any]], family: str, show_usage: bool, finish: AsyncFinish
) -> AsyncIterator[dict[str, Any]]:
    """The async twin of :func:`capture`."""
    captured = _acapture(chunks, family, show_usage, finish)
    await captured.__anext__()  # see capture()
    return captured


async def _acapture(
    chunks: AsyncIterator[dict[str, Any]], family: str, show_usage: bool, finish: AsyncFinish
) -> AsyncIterator[dict[str, Any]]:
    collected: list[dict[str, Any]] = []
    answer = error = None
    try:
        yield {}  # the priming stop, consumed by acapture()
        async for chunk in chunks:
            collected.append(chunk)
            if not _hidden(chunk, show_usage):
                yield chunk
        answer = _complete(family, collected)
    except GeneratorExit:
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            with contextlib.suppress(RuntimeError):  # already being closed: the event loop is shutting down
                await close()
        await finish(answer, error)


async def as_async(chunks: Iterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for chunk in chunks:
        yield chunk
