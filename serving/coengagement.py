"""The co-engagement candidate source as the service reads it from the online store.

Per request: the user's pair window (``user_coengagement``) and the neighbour rows
(``item_coengagement``) of its newest ``RECENT_ITEMS`` items, two reads of the
online store; the cosine (``beam_pipelines.state.coengagement.cosine_scores``, summed
over the stored pairs) normalises by each item's accepted event count from the item
snapshot. Rows the catalogue does not know (items newer than the model version) add
nothing.
"""

from __future__ import annotations

import numpy as np

from beam_pipelines.state.coengagement import RECENT_ITEMS, recency_weights
from feature_repo import features as f
from serving.catalog import ItemCatalog
from serving.features import ItemSnapshot, LazyStore

EVENT_COUNT = "item_event_count"


def interacted_items(store: LazyStore, user_id: str) -> list[str]:
    """The user's pair window, newest first (empty for a user the stage has not seen)."""
    row = store.read(f.USER_COENGAGEMENT, [user_id]).get(user_id)
    return list((row or {}).get("user_interacted_items") or [])


def coengagement_scores(
    store: LazyStore,
    catalog: ItemCatalog,
    items: ItemSnapshot,
    recent_newest_first: list[str],
    n_recent: int = RECENT_ITEMS,
) -> np.ndarray:
    """``[catalogue]`` cosine co-engagement of every row with the user's recent items:
    ``cosine_scores`` of their neighbour rows, summed from the ``R × 200`` stored pairs
    instead of an ``[R, catalogue]`` matrix (per request, that matrix grows with the
    catalogue: 16 MB at 100k items)."""
    recent = list(reversed(recent_newest_first[:n_recent]))  # oldest first
    if not recent or not len(catalog):
        return np.zeros(len(catalog))
    rows = store.read(f.ITEM_COENGAGEMENT, recent)
    counts = items.column(EVENT_COUNT)
    own = catalog.rows(recent)
    recent_counts = np.where(own >= 0, counts[own], 1.0)
    weights = recency_weights(len(recent))
    row_weight = weights / np.sqrt(np.maximum(recent_counts, 1.0))
    neighbours: list[str] = []
    pairs: list[float] = []
    lengths = []
    for item_id in recent:
        row = rows.get(item_id) or {}
        ids, values = row.get("item_neighbors") or [], row.get("item_neighbor_pairs") or []
        n = min(len(ids), len(values))
        neighbours += ids[:n]
        pairs += values[:n]
        lengths.append(n)
    cols = catalog.rows(neighbours)
    values = np.asarray(pairs, dtype=np.float64) * np.repeat(row_weight, lengths)
    known = cols >= 0
    mixed = np.bincount(cols[known], weights=values[known], minlength=len(catalog))
    return mixed / np.sqrt(np.maximum(counts, 1.0)) / weights.sum()
