"""Retries with exponential back-off under a time budget: the store calls of the
streaming job (feature writes, state reads) ride out an outage this way."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TypeVar

LOG = logging.getLogger(__name__)
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """``backoff_s``: first delay, seconds, doubled per retry up to ``max_backoff_s``.
    A call is retried at least ``max_retries`` times and, beyond that, until
    ``budget_s`` seconds have passed since its first attempt; then the last error
    is raised. While it retries, its caller (a bundle) waits: that wait is the
    back-pressure that bounds what the job buffers during an outage."""

    max_retries: int = 3
    backoff_s: float = 0.2
    budget_s: float = 0.0
    max_backoff_s: float = 5.0

    def __post_init__(self):
        if self.max_retries < 0 or self.backoff_s < 0 or self.budget_s < 0:
            raise ValueError("max_retries, backoff_s and budget_s must be >= 0")
        if self.max_backoff_s < self.backoff_s:
            raise ValueError("max_backoff_s must be >= backoff_s")

    def call(
        self,
        fn: Callable[[], T],
        on_retry: Callable[[Exception], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> T:
        start, attempt = clock(), 0
        while True:
            try:
                return fn()
            except Exception as err:  # callers wrap client errors; any failure retries
                attempt += 1
                if attempt > self.max_retries and clock() - start >= self.budget_s:
                    raise
                if on_retry is not None:
                    on_retry(err)
                delay = min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)
                LOG.warning(
                    "store call failed (attempt %d), retrying in %.1f s: %s", attempt, delay, err
                )
                sleep(delay)
