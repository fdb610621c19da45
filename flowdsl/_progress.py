"""Progress bars for batches, drawn from the run's events.

`run(progress=True)` draws one bar per batch on stderr when stderr is a
terminal (`progress="always"` draws anyway). With `flowdsl[rich]` installed
the bars are rich's; otherwise one plain line per batch is rewritten in place.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ._events import Event

__all__ = ["progress_listener"]

_PLAIN_INTERVAL = 0.1  # seconds between redraws of a plain line


def progress_listener(setting: Any, stream: TextIO | None = None) -> Any:
    """A listener drawing batch progress, or None when it should stay off.

    Args:
        setting: `False`, `True` (only on a terminal) or `"always"`.
        stream: Where to draw; stderr by default.
    """
    if setting is False or setting is None:
        return None
    stream = stream if stream is not None else sys.stderr
    if setting != "always" and not stream.isatty():
        return None
    try:
        import rich.progress  # noqa: F401 (only checking it is there)
    except ImportError:
        return _PlainProgress(stream)
    return _RichProgress(stream)


class _PlainProgress:
    """One line per batch: `name: done/total`, redrawn at most ten times a second."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._drawn: dict[str, float] = {}
        self._line = ""  # the batch whose line the cursor is on
        self._width = 0

    def __call__(self, event: Event) -> None:
        name = event.node_id
        if name is None:
            return
        if event.kind == "batch_progress":
            now = time.monotonic()
            if now - self._drawn.get(name, 0.0) >= _PLAIN_INTERVAL:
                self._drawn[name] = now
                data = event.data
                total = f"/{data['pulled']}" if data["exhausted"] else ""
                self._write(name, f"{name}: {data['done']}{total} items")
        elif name in self._drawn and (
            event.kind == "node_finish"
            or (event.kind == "node_error" and event.item_index is None)
        ):
            outcome = "done" if event.kind == "node_finish" else "failed"
            self._write(name, f"{name}: {outcome}", end="\n")
            del self._drawn[name]

    def _write(self, name: str, text: str, end: str = "") -> None:
        if self._line and self._line != name:
            self._stream.write("\n")  # another batch's line stays as it was
            self._width = 0
        self._stream.write("\r" + text.ljust(self._width) + end)
        self._stream.flush()
        self._line, self._width = ("", 0) if end else (name, len(text))


class _RichProgress:
    """rich's bars, one task per batch."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import Progress

        self._progress = Progress(console=Console(file=stream))
        self._tasks: dict[str, Any] = {}

    def __call__(self, event: Event) -> None:
        if event.kind == "batch_progress" and event.node_id is not None:
            data = event.data
            task = self._tasks.get(event.node_id)
            if task is None:
                if not self._tasks:
                    self._progress.start()
                task = self._tasks[event.node_id] = self._progress.add_task(
                    event.node_id, total=None
                )
            total = data["pulled"] if data["exhausted"] else None
            self._progress.update(task, completed=data["done"], total=total)
        elif event.kind == "run_finish" and self._tasks:
            self._progress.stop()
