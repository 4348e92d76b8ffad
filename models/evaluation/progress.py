"""A progress bar on stderr for the long loops (tqdm), off when asked."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], label: str, enabled: bool = True) -> Iterator[T]:
    """Iterate ``items`` with a bar labelled ``label`` (updates at most twice a second)."""
    total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
    yield from tqdm(items, desc=label, total=total, disable=not enabled, mininterval=0.5, unit="ev")
