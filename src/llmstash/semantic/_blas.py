"""Single-threaded BLAS for the small matrix products of the semantic tier.

A sentence embedding multiplies matrices of a few dozen rows; spread over BLAS threads on a busy
machine it is several times slower (the threads wait for cores) than on one thread. While any
caller is inside :func:`single_threaded`, the process's BLAS runs one thread; the previous
setting is restored when the last one leaves. Without threadpoolctl this does nothing.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_lock = threading.Lock()
_inside = 0
_saved: list[tuple[Any, int]] = []
_controllers: list[Any] | None = None


def _blas_controllers() -> list[Any]:
    global _controllers
    if _controllers is None:
        try:
            from threadpoolctl import ThreadpoolController

            _controllers = list(ThreadpoolController().select(user_api="blas").lib_controllers)
        except Exception:  # not installed, or an unknown BLAS: leave the threads alone
            _controllers = []
    return _controllers


@contextmanager
def single_threaded() -> Iterator[None]:
    global _inside
    with _lock:
        if _inside == 0:
            _saved.clear()
            for controller in _blas_controllers():
                with contextlib.suppress(Exception):
                    _saved.append((controller, controller.get_num_threads()))
                    controller.set_num_threads(1)
        _inside += 1
    try:
        yield
    finally:
        with _lock:
            _inside -= 1
            if _inside == 0:
                for controller, threads in _saved:
                    with contextlib.suppress(Exception):
                        controller.set_num_threads(threads)
                _saved.clear()
