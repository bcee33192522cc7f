"""The call functions: ``completion``, ``text_completion``, ``embedding``, ``transcription``, and
their async twins.

Each is a thin adapter over the engine (``_engine.run`` / ``arun``), which reads the cache,
coalesces identical concurrent misses, calls the upstream and stores the answer.
"""

from __future__ import annotations

from typing import Any

from llmstash._engine import arun, run
from llmstash.types import EmbeddingResponse, ModelResponse, TextCompletionResponse, TranscriptionResponse


def completion(model: str, messages: list[dict[str, Any]], **kwargs: Any) -> ModelResponse:
    """A chat completion, answered from the cache when it holds this request.

    Takes the OpenAI chat parameters (``temperature``, ``max_tokens``, ``tools``, ...) plus
    ``api_base``/``base_url``, ``api_key``, ``api_version``, ``timeout``, ``extra_headers``,
    ``extra_body``, ``mock_response``, and the cache arguments ``caching=True/False`` and
    ``cache={"no-cache", "no-store", "ttl", "s-maxage", "namespace", "use-cache"}``.

    With ``stream=True`` it returns a :class:`~llmstash._streaming.ResponseStream` of chunks
    (a replay of the cached answer on a hit); the answer is stored once the stream completes.
    """
    result: ModelResponse = run("completion", {"model": model, "messages": messages, **kwargs})
    return result


async def acompletion(model: str, messages: list[dict[str, Any]], **kwargs: Any) -> ModelResponse:
    """The async twin of :func:`completion`."""
    result: ModelResponse = await arun("acompletion", {"model": model, "messages": messages, **kwargs})
    return result


def text_completion(model: str, prompt: Any, **kwargs: Any) -> TextCompletionResponse:
    """A legacy text completion (``/v1/completions``), cached like :func:`completion`."""
    result: TextCompletionResponse = run("text_completion", {"model": model, "prompt": prompt, **kwargs})
    return result


async def atext_completion(model: str, prompt: Any, **kwargs: Any) -> TextCompletionResponse:
    """The async twin of :func:`text_completion`."""
    result: TextCompletionResponse = await arun("atext_completion", {"model": model, "prompt": prompt, **kwargs})
    return result


def embedding(model: str, input: Any, **kwargs: Any) -> EmbeddingResponse:
    """Embeddings for ``input`` (a string or a list), cached like :func:`completion`."""
    result: EmbeddingResponse = run("embedding", {"model": model, "input": input, **kwargs})
    return result


async def aembedding(model: str, input: Any, **kwargs: Any) -> EmbeddingResponse:
    """The async twin of :func:`embedding`."""
    result: EmbeddingResponse = await arun("aembedding", {"model": model, "input": input, **kwargs})
    return result


def transcription(model: str, file: Any, **kwargs: Any) -> TranscriptionResponse:
    """Speech to text (``/v1/audio/transcriptions``, e.g. ``whisper-1``), cached by the SHA-256 of
    the audio bytes plus the parameters (``language``, ``prompt``, ``response_format``,
    ``temperature``, ...). ``file`` is a path, bytes, a ``(name, bytes)`` tuple or a binary file
    object; the same bytes give the same key whichever form they come in."""
    result: TranscriptionResponse = run("transcription", {"model": model, "file": file, **kwargs})
    return result


async def atranscription(model: str, file: Any, **kwargs: Any) -> TranscriptionResponse:
    """The async twin of :func:`transcription`."""
    result: TranscriptionResponse = await arun("atranscription", {"model": model, "file": file, **kwargs})
    return result
