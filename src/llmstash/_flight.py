"""Single flight: concurrent identical misses make one upstream call.

The first caller of a key becomes the leader and calls upstream; later callers of the same key
join its flight and wait. When the leader lands the flight with the answer (JSON bytes), every
waiter decodes its own copy; when the leader fails it lands with nothing and the waiters try
again, one of them becoming the next leader. Waiting is bounded by the call's timeout.

Threads share :class:`ThreadFlights`; asyncio tasks share :class:`TaskFlights`, one table per
event loop.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

from llmstash.exceptions import Timeout

if TYPE_CHECKING:
    import asyncio


def waited_too_long(seconds: float) -> Timeout:
    return Timeout(f"waited {seconds:.1f} s for an identical request already in flight (the call's timeout)")


class Flight:
    """One in-flight upstream call that identical requests wait for (threads)."""

    __slots__ = ("_done", "_leader", "_owner", "key", "result")

    def __init__(self, owner: ThreadFlights, key: str) -> None:
        self._owner = owner
        self.key = key
        self.result: bytes | None = None
        self._done = threading.Event()
        self._leader = threading.get_ident()

    def led_by_caller(self) -> bool:
        """Whether the calling thread leads this flight (it holds the leader's unread stream)."""
        return self._leader == threading.get_ident()

    def wait(self, timeout: float) -> bytes | None:
        """The leader's answer, or None when the leader failed. Raises Timeout past ``timeout``."""
        if not self._done.wait(max(0.0, timeout)):
            raise waited_too_long(timeout)
        return self.result

    def land(self, result: bytes | None) -> None:
        """Hand the answer (or None: failed) to every waiter and close the flight."""
        self.result = result
        self._owner.close(self)
        self._done.set()


class ThreadFlights:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[str, Flight] = {}

    def join(self, key: str) -> tuple[Flight, bool]:
        """The flight for ``key`` and whether the caller leads it (True: a new flight)."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = Flight(self, key)
            return flight, True

    def close(self, flight: Flight) -> None:
        with self._lock:
            if self._flights.get(flight.key) is flight:
                del self._flights[flight.key]


class TaskFlight:
    """One in-flight upstream call that identical requests wait for (asyncio tasks)."""

    __slots__ = ("_future", "_leader", "_owner", "key")

    def __init__(self, owner: TaskFlights, key: str, future: asyncio.Future[bytes | None]) -> None:
        import asyncio

        self._owner = owner
        self.key = key
        self._future = future
        self._leader = asyncio.current_task()

    def led_by_caller(self) -> bool:
        """Whether the calling task leads this flight (it holds the leader's unread stream)."""
        import asyncio

        return asyncio.current_task() is self._leader

    async def wait(self, timeout: float) -> bytes | None:
        import asyncio

        try:
            return await asyncio.wait_for(asyncio.shield(self._future), max(0.0, timeout))
        except TimeoutError:
            raise waited_too_long(timeout) from None

    def land(self, result: bytes | None) -> None:
        self._owner.close(self)
        if not self._future.done():
            self._future.set_result(result)


class TaskFlights:
    def __init__(self) -> None:
        self._tables: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, TaskFlight]] = weakref.WeakKeyDictionary()

    def join(self, key: str) -> tuple[TaskFlight, bool]:
        """The flight for ``key`` in the running loop and whether the caller leads it."""
        import asyncio

        loop = asyncio.get_running_loop()
        table = self._tables.setdefault(loop, {})
        flight = table.get(key)
        if flight is not None:
            return flight, False
        flight = table[key] = TaskFlight(self, key, loop.create_future())
        return flight, True

    def close(self, flight: TaskFlight) -> None:
        table = self._tables.get(flight._future.get_loop())
        if table is not None and table.get(flight.key) is flight:
            del table[flight.key]
