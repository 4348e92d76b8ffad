"""Admission of recommendation requests: run now, wait briefly, or shed at once.

``workers`` requests run at a time. Past that a request waits, newest first, for
at most ``max_wait_s`` and among at most ``max_waiting`` others; a request that
would wait longer, or the oldest waiter when a new one arrives at a full queue, is
shed (the caller answers 503 ``overloaded`` with ``Retry-After``).

Why newest first: under overload the oldest waiters are the ones about to time
out, and serving them would spend a worker on a request that has already waited
its latency budget; the newest has waited least (adaptive LIFO, as in Facebook's
"Fail at scale", with the queue delay rather than its length as the overload
signal, as in CoDel). At light load the queue is short and the order hardly
matters.

Event-loop only (not thread-safe): every call runs on the loop that serves requests.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable


class Admission:
    def __init__(
        self,
        workers: int,
        max_waiting: int,
        max_wait_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``max_wait_s``: longest a request may wait for a worker, seconds; ``clock``
        in seconds."""
        if workers < 1 or max_waiting < 0 or max_wait_s < 0:
            raise ValueError(f"bad limits: {workers=}, {max_waiting=}, {max_wait_s=}")
        self.workers, self.max_waiting, self.max_wait_s = workers, max_waiting, max_wait_s
        self.clock = clock
        self.running = 0
        self._waiting: collections.deque[tuple[float, asyncio.Future[bool]]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def in_flight(self) -> int:
        """Requests running or waiting."""
        return self.running + len(self._waiting)

    def admit(self) -> bool | asyncio.Future[bool]:
        """True: run now (call ``release`` when done); False: shed now; else a
        future that resolves to one of those two."""
        self.expire()
        if self.running < self.workers:
            self.running += 1
            return True
        if self.max_waiting == 0 or self.max_wait_s == 0:
            return False
        if len(self._waiting) >= self.max_waiting:
            self._waiting.popleft()[1].set_result(False)
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append((self.clock(), waiter))
        self._arm()
        return waiter

    def release(self) -> None:
        """A running request finished: its worker goes to the newest waiter."""
        self.expire()
        while self._waiting:
            _, waiter = self._waiting.pop()
            if not waiter.done():  # a cancelled waiter (the client went away) is skipped
                waiter.set_result(True)
                return
        self.running -= 1

    def expire(self) -> None:
        """Shed the waiters that have waited longer than ``max_wait_s``."""
        deadline = self.clock() - self.max_wait_s
        while self._waiting and self._waiting[0][0] <= deadline:
            _, waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(False)

    def _arm(self) -> None:
        # One timer for the oldest waiter, so a waiter is shed on time even when no
        # request arrives or finishes meanwhile.
        if self._timer is not None or not self._waiting:
            return
        delay = self._waiting[0][0] + self.max_wait_s - self.clock()
        self._timer = asyncio.get_running_loop().call_later(max(delay, 0.0), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.expire()
        self._arm()
