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

from beam_pipelines.state.coengagement import RECENT_ITEMS, sparse_cosine_scores
from feature_repo import features as f
from serving.catalog import ItemCatalog
from serving.features import ItemSnapshot, LazyStore

EVENT_COUNT = f.ITEM_EVENT_COUNT


def interacted_items(store: LazyStore, user_id: str) -> list[str]:
    """The user's pair window, newest first (empty for a user the stage has not seen)."""
    row = store.read(f.USER_COENGAGEMENT, [user_id]).get(user_id)
    return list((row or {}).get(f.USER_INTERACTED_ITEMS) or [])


def coengagement_scores(
    store: LazyStore,
    catalog: ItemCatalog,
    items: ItemSnapshot,
    recent_newest_first: list[str],
    n_recent: int = RECENT_ITEMS,
) -> np.ndarray:
    """``[catalogue]`` cosine co-engagement of every row with the user's recent items:
    ``sparse_cosine_scores`` of their neighbour rows, from the ``R × 200`` stored pairs
    instead of an ``[R, catalogue]`` matrix (per request, that matrix grows with the
    catalogue: 16 MB at 100k items)."""
    recent = list(reversed(recent_newest_first[:n_recent]))  # oldest first
    if not recent or not len(catalog):
        return np.zeros(len(catalog))
    rows = store.read(f.ITEM_COENGAGEMENT, recent)
    counts = items.column(EVENT_COUNT)
    own = catalog.rows(recent)
    recent_counts = np.where(own >= 0, counts[own], 1.0)
    which: list[int] = []
    neighbours: list[str] = []
    pairs: list[float] = []
    for r, item_id in enumerate(recent):
        row = rows.get(item_id) or {}
        ids, values = row.get(f.ITEM_NEIGHBORS) or [], row.get(f.ITEM_NEIGHBOR_PAIRS) or []
        n = min(len(ids), len(values))
        which += [r] * n
        neighbours += ids[:n]
        pairs += values[:n]
    cols = catalog.rows(neighbours)
    known = cols >= 0
    return sparse_cosine_scores(
        np.asarray(which, np.int64)[known],
        cols[known],
        np.asarray(pairs, np.float64)[known],
        recent_counts,
        counts,
    )
