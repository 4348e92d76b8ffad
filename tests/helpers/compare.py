"""Feature-row comparisons: exact for ids, counts, times and lists of them; relative
tolerance for floats (decayed sums, rates, embeddings)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any


def last_row_per_entity(rows: Iterable[Mapping[str, Any]], key: str) -> dict[str, Mapping]:
    """The last row of each entity in the order the rows were produced."""
    out: dict[str, Mapping] = {}
    for row in rows:
        out[row[key]] = row
    return out


def _close(a: Any, b: Any, rel: float, abs_: float) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return (
            isinstance(a, (int, float))
            and isinstance(b, (int, float))
            and math.isclose(a, b, rel_tol=rel, abs_tol=abs_)
        )
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y, rel, abs_) for x, y in zip(a, b, strict=True))
    return a == b


def row_differences(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    rel: float = 1e-9,
    abs_: float = 1e-12,
    columns: Iterable[str] | None = None,
) -> list[str]:
    """Columns where two rows differ beyond the tolerance (all columns by default)."""
    names = sorted(set(a) | set(b)) if columns is None else list(columns)
    return [
        f"{name}: {a.get(name)!r:.200} != {b.get(name)!r:.200}"
        for name in names
        if name not in a or name not in b or not _close(a[name], b[name], rel, abs_)
    ]


def assert_same_entities(
    got: Mapping[str, Mapping],
    want: Mapping[str, Mapping],
    rel: float = 1e-9,
    abs_: float = 1e-12,
    columns: Iterable[str] | None = None,
) -> None:
    """Same entity ids and, per entity, the same values within the tolerance."""
    assert sorted(got) == sorted(want)
    problems = {}
    for entity in sorted(want):
        diff = row_differences(got[entity], want[entity], rel, abs_, columns)
        if diff:
            problems[entity] = diff
    assert not problems, "\n".join(f"{e}: {d}" for e, d in list(problems.items())[:10])


# Exact after the float32 round trip of the store: ids, counts, times, versions and
# the recent lists (sorted by event time, ties by event id); the rest are decayed
# sums, equal to float32 precision when summed in another order.
EXACT_ONLINE = frozenset(
    {
        "user_embedding_version",
        "user_event_count",
        "user_last_event_ms",
        "user_recent_items",
        "user_recent_ts_ms",
        "item_event_count",
        "item_last_event_ms",
    }
)


def assert_same_online(got: Mapping[str, Mapping], want: Mapping[str, Mapping], schema) -> None:
    """Two stores' rows of one realtime view (``schema``: its feature names): exact
    on ``EXACT_ONLINE``, to float32 precision on the rest."""
    exact = [name for name in schema if name in EXACT_ONLINE]
    approx = [name for name in schema if name not in EXACT_ONLINE]
    assert_same_entities(got, want, rel=0, abs_=0, columns=exact)
    assert_same_entities(got, want, rel=1e-6, abs_=1e-6, columns=approx)
