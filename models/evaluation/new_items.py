"""Upload → first engagement for items released during the test stream (simulator).

The simulator's ``<out>.items.jsonl`` gives each item's ``release_ms`` (its upload).
An item released after the training period has no training interaction, and a
variant can only earn its engagements by ranking it. A variant *delivers* a
target interaction when it ranked the item in its top ``k`` just before the event;
an item's time to first engagement is the time from its upload to the first
delivered interaction. The log's own first interaction with it (what any variant
could deliver at best) is the reference. Items never delivered are censored:
medians count them as infinite (``None`` when more than half are).
"""

from __future__ import annotations

import pathlib

import numpy as np

from beam_pipelines.items import parse_item
from models.evaluation.data import ReplayLog

HOUR_MS = 3_600_000


def read_releases(items_path: str | pathlib.Path) -> dict[str, int]:
    """item id → upload time (ms) of an ``items.jsonl``, read by the item contract's
    parser (``release_ms`` is its upload time); items without one are left out."""
    out = {}
    for line in pathlib.Path(items_path).read_bytes().splitlines():
        if line.strip():
            item = parse_item(line)
            if item.upload_ms is not None:
                out[item.item_id] = item.upload_ms
    return out


def upload_to_first_engagement(
    log: ReplayLog,
    positions: np.ndarray,
    ranks: dict[str, np.ndarray],
    releases: dict[str, int],
    k: int = 10,
) -> dict | None:
    """Per variant: new items delivered within ``k`` at least once and the median
    hours from upload to the first delivered interaction; ``log`` the reference.
    ``positions``/``ranks``: the replay's targets (``ReplayResult``). None when no
    item was released during the test stream and then interacted with."""
    if log.n_train >= len(log.events):
        return None
    test_start = int(log.ts_ms[log.n_train])
    release = np.array([releases.get(item, -1) for item in log.items], dtype=np.int64)
    items = log.item_idx[positions]
    new = release[items] >= test_start
    if not new.any():
        return None
    hours = (log.ts_ms[positions] - release[items]) / HOUR_MS
    n_items = len(np.unique(items[new]))

    def summary(delivered: np.ndarray) -> dict:
        first: dict[int, float] = {}
        chosen = delivered & new
        for item, h in zip(items[chosen].tolist(), hours[chosen].tolist(), strict=True):
            first.setdefault(item, h)  # targets are in event order: the first is the earliest
        values = np.array(list(first.values()) + [np.inf] * (n_items - len(first)))
        median = float(np.median(values))
        return {
            "items_delivered": len(first),
            "median_hours": round(median, 3) if np.isfinite(median) else None,
        }

    out = {"k": k, "new_items": n_items, "log": summary(np.ones(len(items), dtype=bool))}
    for name, r in ranks.items():
        out[name] = summary(np.asarray(r) < k)
    return out
