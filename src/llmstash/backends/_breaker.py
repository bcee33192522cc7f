"""A circuit breaker for network backends: after an outage, skip the server for a moment.

When a server is down every operation would wait for its timeout; instead, after a connection
failure the backend fails at once for ``pause`` seconds (each call goes upstream without waiting),
then tries the server again and resumes when it answers.
"""

from __future__ import annotations

import time

from llmstash.exceptions import CacheBackendError


class Breaker:
    __slots__ = ("_down_until", "name", "pause")

    def __init__(self, name: str, pause: float) -> None:
        self.name = name
        self.pause = pause
        self._down_until = 0.0

    def check(self) -> None:
        """Raise CacheBackendError while the server is being skipped."""
        if self._down_until and time.monotonic() < self._down_until:
            raise CacheBackendError(f"{self.name} was unreachable moments ago; skipping it briefly")

    def trip(self) -> None:
        """Note an outage: skip the server for ``pause`` seconds."""
        self._down_until = time.monotonic() + self.pause

    def reset(self) -> None:
        """The server answered."""
        self._down_until = 0.0
