"""Progress of the long loops on stderr, off when asked: a tqdm bar on a terminal,
one line per stage when stderr is a file or a pipe (a bar's carriage returns would
fill a log)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], label: str, enabled: bool = True) -> Iterator[T]:
    """Iterate ``items`` with a bar labelled ``label`` (updates at most twice a second)."""
    total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    if not enabled or sys.stderr.isatty():
        yield from tqdm(
            items, desc=label, total=total, disable=not enabled, mininterval=0.5, unit="ev"
        )
        return
    started, count = time.perf_counter(), 0
    for item in items:
        count += 1
        yield item
    print(f"{label}: {count} ev in {time.perf_counter() - started:.1f} s", file=sys.stderr)
