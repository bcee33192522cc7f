"""Audio uploads for transcriptions: read a path, bytes or a file object into (name, bytes).

The cache key of a transcription holds the SHA-256 of the audio bytes, never the file name, so
a path, the same bytes and a file object reading them give the same key.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from llmstash.exceptions import ConfigurationError


def read_upload(file: Any) -> tuple[str, bytes]:
    """``(file name, audio bytes)`` from a path, bytes, a ``(name, bytes)`` tuple or a file object."""
    if isinstance(file, (str, os.PathLike)):
        path = os.fspath(file)
        with open(path, "rb") as handle:
            return os.path.basename(path), handle.read()
    if isinstance(file, (bytes, bytearray, memoryview)):
        return "audio", bytes(file)
    if isinstance(file, tuple) and len(file) >= 2 and isinstance(file[1], (bytes, bytearray)):
        return str(file[0]), bytes(file[1])
    read = getattr(file, "read", None)
    if callable(read):
        data = read()
        if isinstance(data, (bytes, bytearray)):
            return os.path.basename(str(getattr(file, "name", "audio"))), bytes(data)
    raise ConfigurationError(
        f"file= must be a path, bytes, a (name, bytes) tuple or a binary file object, got {type(file).__name__}"
    )


def audio_digest(data: bytes) -> dict[str, Any]:
    """What a transcription key holds of the audio."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
