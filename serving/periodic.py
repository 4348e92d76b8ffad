"""A function run every few seconds in a daemon thread, off the request path."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Periodic:
    """Calls ``work`` every ``interval_s`` seconds from ``start`` until ``stop``
    (the first call one interval after ``start``). ``work`` must not raise: the
    callers catch and log their own errors, so a bad tick never ends the thread."""

    def __init__(self, work: Callable[[], object], interval_s: float, name: str) -> None:
        self._work, self.interval_s, self.name = work, interval_s, name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._work()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
