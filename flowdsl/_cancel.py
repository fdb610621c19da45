"""`CancelToken`: a thread-safe way to cancel a run from anywhere."""

from __future__ import annotations

import threading
from typing import Callable

__all__ = ["CancelToken"]


class CancelToken:
    """Cancels the runs it is passed to (`run(cancel=token)`), from any thread.

    Cancelling stops scheduling, cancels async nodes in flight, and tells
    sync nodes through `ctx.cancelled`; the run ends with status
    `"cancelled"`, keeping every output that completed.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    @property
    def cancelled(self) -> bool:
        """Whether `cancel` was called."""
        return self._event.is_set()

    def cancel(self) -> None:
        """Cancel every run using this token; calling it again does nothing."""
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` on cancel (at once if already cancelled).

        Returns:
            A function that unregisters the callback.
        """
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return lambda: self._remove(callback)
        callback()
        return lambda: None

    def _remove(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)
